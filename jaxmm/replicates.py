"""Per-replicate fit results of a bootstrap, as host arrays: what the engine stores and the files hold."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .mixedmodel import MixedModel


@dataclass
class Replicates:
    """Per-replicate fit results, as host arrays (one row per replicate)."""

    objective: np.ndarray  # (N,)
    beta: np.ndarray  # (N, p) all coefficients; inestimable ones -0.0
    se: np.ndarray  # (N, p); NaN for inestimable ones
    sigma: np.ndarray  # (N,); NaN for a family without a dispersion parameter
    theta: np.ndarray  # (N, ntheta)
    converged: np.ndarray  # (N,) bool
    niter: np.ndarray  # (N,) int

    @classmethod
    def empty(cls, n: int, m: MixedModel) -> Replicates:
        p = len(m.coefnames)
        return cls(
            objective=np.full(n, np.nan),
            beta=np.full((n, p), -0.0),
            se=np.full((n, p), np.nan),
            sigma=np.full(n, np.nan),
            theta=np.full((n, m.structure.ntheta), np.nan),
            converged=np.zeros(n, dtype=bool),
            niter=np.zeros(n, dtype=np.int64),
        )

    def store(self, rows: np.ndarray, res, m: MixedModel) -> None:
        """Write the lanes of a batched FitResult (one per row) into `rows`."""
        est = m.design.estimable
        self.objective[rows] = res.objective
        self.beta[np.ix_(rows, est)] = res.beta
        self.se[np.ix_(rows, est)] = res.stderror
        self.sigma[rows] = res.sigma
        self.theta[rows] = res.theta
        self.converged[rows] = res.converged
        self.niter[rows] = res.niter

    def take(self, rows: np.ndarray) -> Replicates:
        """The rows `rows`, as Replicates."""
        return Replicates(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def put(self, rows: np.ndarray, other: Replicates) -> None:
        """self[rows] = other, field by field."""
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)

    def astype(self, ftype) -> Replicates:
        conv = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("objective", "beta", "se", "sigma", "theta"):
            conv[name] = conv[name].astype(ftype)
        return Replicates(**conv)

    @classmethod
    def concat(cls, parts: list[Replicates]) -> Replicates:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.objective)
