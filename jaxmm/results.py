"""Bootstrap results: the replicate arrays, the tables MixedModels.jl names, intervals, combining, files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from .model import LinearMixedModel, MixedModel


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

    def store(self, rows: np.ndarray, res, m: MixedModel, extra_iterations=0) -> None:
        """Write the lanes of a batched FitResult (one per row) into `rows`."""
        est = m.design.estimable
        self.objective[rows] = res.objective
        self.beta[np.ix_(rows, est)] = res.beta
        self.se[np.ix_(rows, est)] = res.stderror
        self.sigma[rows] = res.sigma
        self.theta[rows] = res.theta
        self.converged[rows] = res.converged
        self.niter[rows] = res.niter + extra_iterations

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


def _numbered(prefix: str, n: int) -> list[str]:
    """β1, β2, ... zero-padded once there are 10 or more, as MixedModels.jl names them."""
    width = len(str(n)) if n >= 10 else 1
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


def shortestcovint(v, level: float = 0.95) -> tuple[float, float]:
    """Shortest interval holding ceil(n * level) of the sorted values of v (NaNs ignored)."""
    _check_level(level)
    v = np.sort(np.asarray(v, dtype=np.float64)[~np.isnan(np.asarray(v, dtype=np.float64))])
    if len(v) == 0:
        raise ValueError("shortestcovint needs at least one non-missing value")
    ilen = int(math.ceil(len(v) * level))
    widths = v[ilen - 1 :] - v[: len(v) - ilen + 1]
    i = int(np.argmin(widths))
    return float(v[i]), float(v[i + ilen - 1])


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float, np.floating)) and 0.0 < level < 1.0):
        raise ValueError(f"level must be strictly between 0 and 1, got {level!r}")


def _check_interval(level: float, method: str) -> None:
    _check_level(level)
    if method not in ("shortest", "equaltail"):
        raise ValueError(f"method must be 'shortest' or 'equaltail', got {method!r}")


def _interval(values: np.ndarray, level: float, method: str) -> tuple[float, float]:
    """The shortest interval holding `level` of the values, or the equal-tailed (percentile) one."""
    if method == "shortest":
        return shortestcovint(values, level)
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass
class MixedModelBootstrap:
    """The result of `parametricbootstrap`: one fit per simulated response, and summaries of them.
    A generalized linear mixed model's has no σ (its family has no dispersion parameter): no σ
    column in tbl, no residual row in allpars and the intervals."""

    model: MixedModel
    replicates: Replicates
    sim: tuple = field(default=())
    statistic: np.ndarray | None = None  # (N, ...) the values of parametricbootstrap's `statistic`

    # ---- per-replicate arrays ---------------------------------------------------------------
    @property
    def objective(self) -> np.ndarray:
        return self.replicates.objective

    @property
    def theta(self) -> np.ndarray:
        return self.replicates.theta

    @property
    def se(self) -> np.ndarray:
        return self.replicates.se

    @property
    def converged(self) -> np.ndarray:
        return self.replicates.converged

    @property
    def _dispersion(self) -> bool:
        """Has the model a residual scale sigma (a linear mixed model)?"""
        return isinstance(self.model, LinearMixedModel)

    @property
    def lowerbd(self) -> np.ndarray:
        return self.model.lowerbd

    @property
    def nsamp(self) -> int:
        return len(self.replicates)

    def __len__(self) -> int:
        return self.nsamp

    # ---- variance components per replicate --------------------------------------------------
    def _sd_corr(self) -> tuple[list[tuple[str, str, np.ndarray]], list[tuple[str, str, np.ndarray]]]:
        """Per random-effects column: (group, column, sd); per correlated pair: (group, 'a, b', rho)."""
        sds, rhos, offset = [], [], 0
        theta = self.theta.astype(np.float64)
        sigma = self.replicates.sigma.astype(np.float64) if self._dispersion else np.ones(len(theta))
        for t in self.model.structure.terms:
            lam = np.zeros((len(theta), t.k, t.k))
            lam[:, t.theta_rows, t.theta_cols] = theta[:, offset : offset + t.ntheta]
            offset += t.ntheta
            cov = lam @ lam.transpose(0, 2, 1)
            norms = np.sqrt(np.einsum("nii->ni", cov))
            sds += [(t.group, c, sigma * norms[:, i]) for i, c in enumerate(t.columns)]
            if any(r != c for r, c in zip(t.theta_rows, t.theta_cols)):
                with np.errstate(invalid="ignore", divide="ignore"):
                    for i in range(t.k):
                        for j in range(i + 1, t.k):
                            rho = cov[:, i, j] / (norms[:, i] * norms[:, j])
                            rhos.append((t.group, f"{t.columns[i]}, {t.columns[j]}", rho))
        ftype = self.replicates.sigma.dtype
        return [(g, c, v.astype(ftype)) for g, c, v in sds], [(g, c, v.astype(ftype)) for g, c, v in rhos]

    @property
    def tbl(self) -> pd.DataFrame:
        """One row per replicate: obj, β1..βp, σ (with a dispersion parameter), σ1.., ρ1.., θ1..
        (MixedModels.jl's names)."""
        sds, rhos = self._sd_corr()
        cols: dict[str, np.ndarray] = {"obj": self.objective}
        cols.update(zip(_numbered("β", self.replicates.beta.shape[1]), self.replicates.beta.T))
        if self._dispersion:
            cols["σ"] = self.replicates.sigma
        cols.update(zip(_numbered("σ", len(sds)), (s[2] for s in sds)))
        cols.update(zip(_numbered("ρ", len(rhos)), (r[2] for r in rhos)))
        cols.update(zip(_numbered("θ", self.theta.shape[1]), self.theta.T))
        return pd.DataFrame(cols)

    @property
    def allpars(self) -> pd.DataFrame:
        """Long format: iter, type ("β", "σ", "ρ"), group, names, value (σ residual: with a dispersion parameter)."""
        n = self.nsamp
        iters = np.arange(1, n + 1)
        sds, rhos = self._sd_corr()
        pieces = [
            ("β", None, name, self.replicates.beta[:, i]) for i, name in enumerate(self.model.coefnames)
        ]
        by_group: dict[str, list] = {}
        for kind, rows in (("σ", sds), ("ρ", rhos)):
            for group, names, values in rows:
                by_group.setdefault(group, []).append((kind, group, names, values))
        for group_rows in by_group.values():
            pieces += group_rows
        if self._dispersion:
            pieces.append(("σ", "residual", None, self.replicates.sigma))
        frames = [
            pd.DataFrame({"iter": iters, "type": kind, "group": group, "names": names, "value": values.astype(np.float64)})
            for kind, group, names, values in pieces
        ]
        return pd.concat(frames, ignore_index=True)

    @property
    def fits(self) -> pd.DataFrame:
        """The raw fit per replicate: objective, σ (with a dispersion parameter), β (array), se (array), θ (array), converged."""
        r = self.replicates
        cols = {"objective": r.objective, "σ": r.sigma, "β": list(r.beta), "se": list(r.se), "θ": list(r.theta), "converged": r.converged}
        if not self._dispersion:
            del cols["σ"]
        return pd.DataFrame(cols)

    @property
    def beta(self) -> pd.DataFrame:
        """Long format: iter, coefname, β."""
        return self.coefpvalues[["iter", "coefname", "β"]]

    β = beta

    @property
    def coefpvalues(self) -> pd.DataFrame:
        """Long format: iter, coefname, β, se, z, p (two-sided Wald p-value)."""
        r = self.replicates
        n, p = r.beta.shape
        beta = r.beta.astype(np.float64).reshape(-1)
        se = r.se.astype(np.float64).reshape(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = beta / se
        return pd.DataFrame(
            {
                "iter": np.repeat(np.arange(1, n + 1), p),
                "coefname": np.tile(np.asarray(self.model.coefnames, dtype=object), n),
                "β": beta,
                "se": se,
                "z": z,
                "p": 2.0 * sps.norm.sf(np.abs(z)),
            }
        )

    @property
    def sigmas(self) -> pd.DataFrame:
        """Long format: iter, group, column, σ (random-effects standard deviations)."""
        sds, _ = self._sd_corr()
        iters = np.arange(1, self.nsamp + 1)
        return pd.concat(
            [pd.DataFrame({"iter": iters, "group": g, "column": c, "σ": v}) for g, c, v in sds], ignore_index=True
        )

    σs = sigmas

    def issingular(self, atol: float = 0.0) -> np.ndarray:
        """Per replicate: is some bounded component of theta at (within atol of) its lower bound?"""
        bounded = self.lowerbd == 0.0
        return np.any(self.theta[:, bounded] <= self.lowerbd[bounded] + atol, axis=1)

    def shortestcovint(self, level: float = 0.95) -> pd.DataFrame:
        """Shortest coverage interval of every parameter in `allpars`: type, group, names, lower, upper."""
        _check_level(level)
        rows = []
        for (kind, group, names), part in self.allpars.groupby(["type", "group", "names"], dropna=False, sort=False):
            lo, hi = shortestcovint(part["value"].to_numpy(), level)
            rows.append((kind, None if pd.isna(group) else group, None if pd.isna(names) else names, lo, hi))
        return pd.DataFrame(rows, columns=["type", "group", "names", "lower", "upper"])

    def confint(self, level: float = 0.95, method: str = "shortest") -> pd.DataFrame:
        """Intervals for β.., σ, σ.., ρ.. (tbl's names): 'shortest' or 'equaltail' (percentile)."""
        _check_interval(level, method)
        tbl = self.tbl
        rows = [(par, *_interval(tbl[par].to_numpy(dtype=np.float64), level, method)) for par in tbl.columns
                if par != "obj" and not par.startswith("θ")]
        return pd.DataFrame(rows, columns=["par", "lower", "upper"])

    def statistic_confint(self, level: float = 0.95, method: str = "shortest") -> pd.DataFrame:
        """Intervals for each element of `samp.statistic` (see confint): index, lower, upper, where
        index is the element's position in one replicate's value (a tuple; () for a scalar)."""
        if self.statistic is None:
            raise ValueError("this bootstrap has no statistic; pass statistic= to parametricbootstrap")
        _check_interval(level, method)
        values = self.statistic.astype(np.float64)
        rows = [(index, *_interval(values[(slice(None), *index)], level, method)) for index in np.ndindex(values.shape[1:])]
        return pd.DataFrame(rows, columns=["index", "lower", "upper"])

    def __repr__(self) -> str:
        tbl = self.tbl
        summary = tbl.describe(percentiles=[0.25, 0.5, 0.75]).T[["min", "25%", "50%", "mean", "75%", "max"]]
        failed = int((~self.converged).sum())
        head = [
            f"MixedModelBootstrap with {self.nsamp} samples of {self.model.formula!r}",
            f" converged: {self.nsamp - failed} of {self.nsamp}; singular: {int(self.issingular().sum())}",
        ]
        return "\n".join(head) + "\n" + summary.to_string(float_format=lambda v: f"{v:.6g}")

    # ---- files -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the replicates to a Parquet file (see `restorereplicates` for the layout)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        r = self.replicates
        cols = {"objective": r.objective, "σ": r.sigma, "converged": r.converged, "niter": r.niter}
        for name, arr in (("β", r.beta), ("se", r.se), ("θ", r.theta)):
            cols.update(zip(_numbered(name, arr.shape[1]), arr.T))
        meta = {"model": _signature(self.model), "sim": [np.asarray(s).tolist() for s in self.sim], "format": 1}
        if self.statistic is not None:
            flat = self.statistic.reshape(len(self.statistic), -1)
            cols.update(zip(_numbered("statistic", flat.shape[1]), flat.T))
            meta["statistic_shape"] = list(self.statistic.shape[1:])
        table = pa.table(cols)
        table = table.replace_schema_metadata({b"jaxmm": json.dumps(meta).encode()})
        pq.write_table(table, str(path))


def _signature(m: MixedModel) -> dict:
    """What makes two bootstraps comparable: the model's formula, estimation method and data, and
    for a generalized linear mixed model its family, link and fast setting (a linear mixed
    model's signature has no such entry: its family is "gaussian")."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(m.design.y).tobytes())
    digest.update(np.ascontiguousarray(m.design.matrices.x).tobytes())
    sig = {
        "formula": m.formula,
        "REML": m.REML,
        "nobs": m.nobs,
        "coefnames": list(m.coefnames),
        "terms": [[t.group, list(t.columns), t.nlevels] for t in m.structure.terms],
        "data": digest.hexdigest()[:16],
    }
    if not isinstance(m, LinearMixedModel):
        sig.update(family=f"{m.family.name} ({m.family.link})", fast=m.fast)
    return sig


def _signature_difference(ours: dict, theirs: dict) -> tuple[str, object, object] | None:
    """The first entry in which two signatures differ, with both values (None: they agree)."""
    lmm = {"family": "gaussian", "fast": None}
    for key in list(ours) + [k for k in theirs if k not in ours]:
        a, b = ours.get(key, lmm.get(key)), theirs.get(key, lmm.get(key))
        if a != b:
            return key, a, b
    return None


def vcat(*samps) -> MixedModelBootstrap:
    """Concatenate bootstraps of the same model (MixedModels.jl's reduce(vcat, ...)): vcat(a, b) or vcat([a, b])."""
    if len(samps) == 1 and isinstance(samps[0], (list, tuple)):
        samps = tuple(samps[0])
    if not samps or not all(isinstance(s, MixedModelBootstrap) for s in samps):
        raise ValueError("vcat takes MixedModelBootstrap objects (or one list of them)")
    sig = _signature(samps[0].model)
    for s in samps[1:]:
        diff = _signature_difference(sig, _signature(s.model))
        if diff is not None:
            key, ours, theirs = diff
            raise ValueError(f"cannot combine bootstraps of different models: their {key} differ ({ours!r} vs {theirs!r})")
    stats = [s.statistic for s in samps]
    if any(v is None for v in stats) and not all(v is None for v in stats):
        raise ValueError("cannot combine bootstraps with and without a statistic")
    statistic = None if stats[0] is None else np.concatenate(stats)
    return MixedModelBootstrap(samps[0].model, Replicates.concat([s.replicates for s in samps]), sim=samps[0].sim, statistic=statistic)


def restorereplicates(path, m: MixedModel) -> MixedModelBootstrap:
    """Read a file written by `samp.save(path)` for the model `m` (checked against it).

    Layout: a Parquet table with columns objective, σ, converged, niter, β1.., se1.., θ1.. (and
    statistic1.., the flattened statistic, if any) and schema metadata key "jaxmm" holding JSON
    with the model's signature, simulation parameters (and the statistic's shape)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(str(path))
        metadata = table.schema.metadata or {}
        if b"jaxmm" not in metadata:
            raise ValueError("it has no jaxmm metadata")
        meta = json.loads(metadata[b"jaxmm"])
        if not isinstance(meta, dict):
            raise ValueError(f"its jaxmm metadata is a {type(meta).__name__}, not an object")
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path} is not a jaxmm bootstrap file: {err}") from None
    theirs = meta.get("model")
    diff = _signature_difference(_signature(m), theirs if isinstance(theirs, dict) else {})
    if diff is not None:
        key, ours, theirs = diff
        raise ValueError(f"{path} holds a bootstrap of another model: its {key} is {theirs!r}, the model's is {ours!r}")
    df = table.to_pandas()
    p, nt = len(m.coefnames), m.structure.ntheta
    absent = [c for c in ["objective", "σ", "converged", "niter", *_numbered("β", p), *_numbered("se", p), *_numbered("θ", nt)] if c not in df]
    if absent:
        raise ValueError(f"{path} is damaged: it has no column {absent[0]!r}")
    reps = Replicates(
        objective=df["objective"].to_numpy(),
        beta=df[_numbered("β", p)].to_numpy(),
        se=df[_numbered("se", p)].to_numpy(),
        sigma=df["σ"].to_numpy(),
        theta=df[_numbered("θ", nt)].to_numpy(),
        converged=df["converged"].to_numpy(dtype=bool),
        niter=df["niter"].to_numpy(),
    )
    statistic = None
    if "statistic_shape" in meta:
        shape = tuple(meta["statistic_shape"])
        names = _numbered("statistic", math.prod(shape))
        if any(c not in df for c in names):
            raise ValueError(f"{path} is damaged: it lacks statistic columns")
        statistic = df[names].to_numpy().reshape(len(df), *shape)
    return MixedModelBootstrap(m, reps, sim=tuple(np.asarray(s) for s in meta.get("sim", ())), statistic=statistic)
