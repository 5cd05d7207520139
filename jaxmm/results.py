"""Bootstrap results: the tables MixedModels.jl names, intervals, combining, files."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import display, io
from .covariance import covariances, sd_corr
from .display import numbered
from .mixedmodel import MixedModel
from .replicates import Replicates


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
    column in tbl, no residual row in allpars and the intervals.

    provenance: which replicates the rows are, as (key, first, count) runs: the PRNG key's data
    (from the seed) and replicate indices first..first+count-1; empty when unknown (a file written
    before it was recorded). vcat uses it to refuse combining a replicate with itself."""

    model: MixedModel
    replicates: Replicates
    sim: tuple = field(default=())
    statistic: np.ndarray | None = None  # (N, ...) the values of parametricbootstrap's `statistic`
    provenance: tuple[tuple[tuple[int, ...], int, int], ...] = ()

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
        """Has the model a residual scale sigma?"""
        return self.model.has_dispersion

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
        sds, rhos = [], []
        terms = self.model.structure.terms
        sigma = self.replicates.sigma.astype(np.float64) if self._dispersion else np.ones(len(self.theta))
        for t, cov in zip(terms, covariances(self.theta, np.ones(len(self.theta)), terms)):
            sd, rho = sd_corr(cov)
            sds += [(t.group, c, sigma * sd[:, i]) for i, c in enumerate(t.columns)]
            if t.correlated:
                rhos += [(t.group, f"{t.columns[i]}, {t.columns[j]}", r) for (i, j), r in rho.items()]
        ftype = self.replicates.sigma.dtype
        return [(g, c, v.astype(ftype)) for g, c, v in sds], [(g, c, v.astype(ftype)) for g, c, v in rhos]

    @property
    def tbl(self) -> pd.DataFrame:
        """One row per replicate: obj, β1..βp, σ (with a dispersion parameter), σ1.., ρ1.., θ1..
        (MixedModels.jl's names)."""
        sds, rhos = self._sd_corr()
        cols: dict[str, np.ndarray] = {"obj": self.objective}
        cols.update(zip(numbered("β", self.replicates.beta.shape[1]), self.replicates.beta.T))
        if self._dispersion:
            cols["σ"] = self.replicates.sigma
        cols.update(zip(numbered("σ", len(sds)), (s[2] for s in sds)))
        cols.update(zip(numbered("ρ", len(rhos)), (r[2] for r in rhos)))
        cols.update(zip(numbered("θ", self.theta.shape[1]), self.theta.T))
        return pd.DataFrame(cols)

    @property
    def allpars(self) -> pd.DataFrame:
        """Long format: iter, type ("β", "σ", "ρ"), group, names, value (σ residual: with a dispersion parameter)."""
        n = self.nsamp
        iters = np.arange(1, n + 1)
        sds, rhos = self._sd_corr()
        pieces = [("β", None, name, self.replicates.beta[:, i]) for i, name in enumerate(self.model.coefnames)]
        by_group: dict[str, list] = {}
        for kind, rows in (("σ", sds), ("ρ", rhos)):
            for group, names, values in rows:
                by_group.setdefault(group, []).append((kind, group, names, values))
        for group_rows in by_group.values():
            pieces += group_rows
        if self._dispersion:
            pieces.append(("σ", "residual", None, self.replicates.sigma))
        frames = [
            pd.DataFrame(
                {"iter": iters, "type": kind, "group": group, "names": names, "value": values.astype(np.float64)}
            )
            for kind, group, names, values in pieces
        ]
        return pd.concat(frames, ignore_index=True)

    @property
    def fits(self) -> pd.DataFrame:
        """The raw fit per replicate: objective, σ (with a dispersion parameter), β (array), se (array), θ (array),
        converged."""
        r = self.replicates
        cols = {
            "objective": r.objective,
            "σ": r.sigma,
            "β": list(r.beta),
            "se": list(r.se),
            "θ": list(r.theta),
            "converged": r.converged,
        }
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
        rows = [
            (par, *_interval(tbl[par].to_numpy(dtype=np.float64), level, method))
            for par in tbl.columns
            if par != "obj" and not par.startswith("θ")
        ]
        return pd.DataFrame(rows, columns=["par", "lower", "upper"])

    def statistic_confint(self, level: float = 0.95, method: str = "shortest") -> pd.DataFrame:
        """Intervals for each element of `samp.statistic` (see confint): index, lower, upper, where
        index is the element's position in one replicate's value (a tuple; () for a scalar)."""
        if self.statistic is None:
            raise ValueError("this bootstrap has no statistic; pass statistic= to parametricbootstrap")
        _check_interval(level, method)
        values = self.statistic.astype(np.float64)
        rows = [
            (index, *_interval(values[(slice(None), *index)], level, method)) for index in np.ndindex(values.shape[1:])
        ]
        return pd.DataFrame(rows, columns=["index", "lower", "upper"])

    def __repr__(self) -> str:
        return display.bootstrap_summary(self)

    def _repr_html_(self) -> str:
        return display.bootstrap_html(self)

    # ---- files ------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the bootstrap to the format path's extension names: .parquet, .arrow or .feather (restorable
        by `restorereplicates`, see jaxmm/io.py), or .csv (the table samp.tbl, not restorable)."""
        if io.output_format(path) == "csv":
            self.tbl.to_csv(path, index=False)
            return
        io.save_replicates(path, self.replicates, self.model, self.sim, self.statistic, self.provenance)


def vcat(*samps) -> MixedModelBootstrap:
    """Concatenate bootstraps of the same model (MixedModels.jl's reduce(vcat, ...)): vcat(a, b) or vcat([a, b])."""
    if len(samps) == 1 and isinstance(samps[0], (list, tuple)):
        samps = tuple(samps[0])
    if not samps or not all(isinstance(s, MixedModelBootstrap) for s in samps):
        raise ValueError("vcat takes MixedModelBootstrap objects (or one list of them)")
    sig = io.signature(samps[0].model)
    for s in samps[1:]:
        diff = io.signature_difference(sig, io.signature(s.model))
        if diff is not None:
            key, ours, theirs = diff
            raise ValueError(
                f"cannot combine bootstraps of different models: their {key} differ ({ours!r} vs {theirs!r})"
            )
    stats = [s.statistic for s in samps]
    if any(v is None for v in stats) and not all(v is None for v in stats):
        raise ValueError("cannot combine bootstraps with and without a statistic")
    runs = [run for s in samps for run in s.provenance]
    for i, (key, first, count) in enumerate(runs):
        for other_key, other_first, other_count in runs[i + 1 :]:
            lo, hi = max(first, other_first), min(first + count, other_first + other_count)
            if key == other_key and lo < hi:
                raise ValueError(
                    f"cannot combine bootstraps that share replicates {lo}..{hi - 1} (the same seed): duplicated "
                    "replicates are not independent; run the parts with different seeds or different replicate ranges"
                )
    statistic = None if stats[0] is None else np.concatenate(stats)
    replicates = Replicates.concat([s.replicates for s in samps])
    known = all(s.provenance for s in samps)
    return MixedModelBootstrap(
        samps[0].model, replicates, sim=samps[0].sim, statistic=statistic, provenance=tuple(runs) if known else ()
    )


def restorereplicates(path, m: MixedModel) -> MixedModelBootstrap:
    """Read a file written by `samp.save(path)` for the model `m` (checked against it); see
    jaxmm/io.py for the layout."""
    replicates, sim, statistic, provenance = io.read_replicates(path, m)
    return MixedModelBootstrap(m, replicates, sim=sim, statistic=statistic, provenance=provenance)
