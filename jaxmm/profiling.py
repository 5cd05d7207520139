"""Likelihood profiles and confidence intervals: lme4's profile.merMod and confint.merMod,
MixedModels.jl's profile.

The profile of a parameter p is the signed square root of the deviance increase when p is held at
a value and every other parameter re-optimised,

    zeta(p) = sign(p - p_hat) sqrt(d(p) - d_hat),     d(p) = min over the others of -2 log L,

and the profile interval at `level` is {p : |zeta(p)| <= z}, z = Phi^-1((1 + level) / 2). As in
lme4, a REML fit is profiled by its ML refit (likelihood, not REML criterion); the parameters are
the fixed effects beta_j, each random-effects column's standard deviation sigma_tc, the
correlations rho (correlated terms) and, for an LMM, the residual sigma, on lme4's "sdcor" scale:

- sd / correlation / sigma: d(phi) = min over the free part of phi. For an LMM
  d = log|L_Z|^2 + r^2(theta) / sigma^2 + n log(2 pi sigma^2) (beta profiled out: lme4's devfun2),
  for a GLMM the Laplace (or adaptive Gauss-Hermite) objective f(theta, beta) over theta and beta;
  theta from phi by lambda_t = diag(sd_t / sigma) chol(R_t), R_t the term's correlation matrix.
- beta_j of an LMM: the model with x_j beta_j as an offset, its deviance profiled over theta
  (sigma and the other fixed effects profiled out). Of a GLMM: f over theta and the others.

Each d(p) is a minimisation by jaxmm's solver (solver.minimize: Newton with the exact Hessian, the
fits' own), over the other parameters on an unbounded scale (see "the optimiser's coordinates"
below), so a profile point is the constrained minimum, to the solver's tolerances, where lme4's
bobyqa may stop above it. Intervals are the exact roots of zeta(p) = +-z (Brent's method on the
profile itself, each value an optimisation), where lme4 interpolates its grid with splines: the two
agree to about 1e-3 relative. Where the profile does not reach -z before a bound (a standard
deviation at 0) the end is the bound, as lme4's. An LMM's d is that of y / s (the fit's units):
-2 log L of y is d + 2 n log s, a constant that zeta does not see.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from ._compile import computing
from ._warn import warn
from .covariance import covariance_pattern, lambdas
from .design import ModelMatrices, Structure, _blocks, _weighted_blocks, suffstats
from .deviance import factorize, objective, profiled_terms
from .glmm.laplace import blocked_pattern, random_effect_index
from .mixedmodel import MixedModel
from .predict import _matrices
from .solver import SolverOptions, minimize

_CORR_EDGE = 1.0 - 1e-10  # a profiled correlation stops short of +-1: chol(R) has no derivative there
# No boundary snap (solver.finish's polish may raise f by ftol_zero_abs): a profile point is the
# constrained minimum itself
_OPTIONS = SolverOptions(xtol_zero_abs=0.0)


@dataclass(frozen=True)
class _Layout:
    """Where each random-effects parameter sits in phi: per term, its columns' sds, then the
    correlations of its pairs (i < j) with a free covariance; then sigma (an LMM)."""

    structure: Structure
    pairs: tuple[tuple[tuple[int, int], ...], ...]  # per term
    dispersion: bool

    @property
    def size(self) -> int:
        return sum(t.k + len(p) for t, p in zip(self.structure.terms, self.pairs)) + int(self.dispersion)

    @property
    def is_corr(self) -> np.ndarray:
        """(size,) bool: which entries of phi are correlations."""
        return np.array([label[0] == "ρ" for label in _phi_labels(self)], dtype=bool)


def _layout(structure: Structure, dispersion: bool) -> _Layout:
    pairs = []
    for t in structure.terms:
        pattern = covariance_pattern(t)
        pairs.append(
            tuple((i, j) for i in range(t.k) for j in range(i + 1, t.k) if (t.columns[i], t.columns[j]) in pattern)
        )
    return _Layout(structure, tuple(pairs), dispersion)


def theta_from_phi(phi: jnp.ndarray, layout: _Layout) -> jnp.ndarray:
    """theta of phi = (sds, correlations per term; sigma): lambda_t = diag(sd_t / sigma) chol(R_t)."""
    sigma = phi[-1] if layout.dispersion else 1.0
    out, offset = [], 0
    for t, pairs in zip(layout.structure.terms, layout.pairs):
        sd = phi[offset : offset + t.k]
        corr = jnp.eye(t.k, dtype=phi.dtype)
        for n, (i, j) in enumerate(pairs):
            corr = corr.at[i, j].set(phi[offset + t.k + n]).at[j, i].set(phi[offset + t.k + n])
        lam = (sd / sigma)[:, None] * jnp.linalg.cholesky(corr)
        out.append(lam[np.asarray(t.theta_rows), np.asarray(t.theta_cols)])
        offset += t.k + len(pairs)
    return jnp.concatenate(out)


def phi_from_theta(theta: np.ndarray, sigma: float, layout: _Layout) -> np.ndarray:
    """The inverse of theta_from_phi: sds and correlations of sigma^2 lambda_t lambda_t' (and sigma)."""
    out = []
    for lam, pairs in zip(lambdas(jnp.asarray(theta), layout.structure.terms), layout.pairs):
        cov = sigma**2 * np.asarray(lam) @ np.asarray(lam).T
        sd = np.sqrt(np.diagonal(cov))
        out += list(sd) + [cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else 0.0 for i, j in pairs]
    return np.array(out + ([sigma] if layout.dispersion else []))


def _phi_labels(layout: _Layout) -> list[tuple[str, str, str | None]]:
    labels = []
    for t, pairs in zip(layout.structure.terms, layout.pairs):
        labels += [("σ", t.group, c) for c in t.columns]
        labels += [("ρ", t.group, f"{t.columns[i]}, {t.columns[j]}") for i, j in pairs]
    return labels + ([("σ", "residual", None)] if layout.dispersion else [])


def _pair_sds(layout: _Layout, k: int) -> np.ndarray:
    """(size,) bool: for phi_k a correlation rho_ij, the entries of sd_i and sd_j; else none."""
    out, offset = np.zeros(layout.size, dtype=bool), 0
    for t, pairs in zip(layout.structure.terms, layout.pairs):
        if offset + t.k <= k < offset + t.k + len(pairs):
            i, j = pairs[k - offset - t.k]
            out[[offset + i, offset + j]] = True
        offset += t.k + len(pairs)
    return out


# ---- the optimiser's coordinates -----------------------------------------------------------
#
# The other parameters are optimised without bounds, by jaxmm's solver (Newton with the exact
# Hessian, solver.minimize), in coordinates a with phi(a) always a valid model:
#   sd = a and sigma = a, signed: a negative sd flips its row of lambda_t, which is the covariance
#     with the signs of that column's correlations flipped (free parameters too), and f is even in
#     sigma; so min over signed sds is min over sd >= 0. Where a correlation rho_ij is the profiled
#     parameter its sign must not flip: there sd_i = |a_i|, sd_j = |a_j|;
#   rho = sin(a): every a a correlation, +-1 included.


def _phi(a: jnp.ndarray, absolute: jnp.ndarray, layout: _Layout) -> jnp.ndarray:
    """phi of the optimiser's coordinates a (the comment above); `absolute` marks the sds taken as |a|."""
    return jnp.where(layout.is_corr, jnp.sin(a), jnp.where(absolute, jnp.abs(a), a))


def _coordinates(phi: np.ndarray, layout: _Layout) -> np.ndarray:
    """Coordinates a of phi, as a start: a correlation's arcsin from just inside +-1 and an sd from at
    least 1e-3 (at rho = +-1 or sd = 0, f is stationary in a, a maximum where the optimum moves inward)."""
    corr = layout.is_corr
    a = np.where(corr, np.arcsin(np.clip(phi, -1.0 + 1e-6, 1.0 - 1e-6)), np.maximum(np.abs(phi), 1e-3))
    return a.astype(np.float64)


# ---- the deviance functions (pure; jitted with their static shapes) ---------------------------


@partial(jax.jit, static_argnames=("structure", "layout"))
def lmm_deviance_phi(phi, blocks, stats, structure: Structure, layout: _Layout):
    """-2 log L of an LMM at phi (sds, correlations, sigma), beta profiled out:
    log|L_Z|^2 + r^2 / sigma^2 + n log(2 pi sigma^2)."""
    terms = profiled_terms(factorize(theta_from_phi(phi, layout), blocks, stats, structure), structure)
    sigma2 = phi[-1] ** 2
    return terms.logdet_z + terms.pwrss / sigma2 + structure.n * jnp.log(2.0 * jnp.pi * sigma2)


@partial(jax.jit, static_argnames=("structure", "layout", "fam", "nAGQ"))
def glmm_deviance_phi(phi, beta_s, data, structure: Structure, layout: _Layout, fam, nAGQ: int):
    """The GLMM objective f(theta(phi), beta_s) (glmm.laplace.adaptive_quadrature)."""
    from .glmm.laplace import adaptive_quadrature

    return adaptive_quadrature(theta_from_phi(phi, layout), beta_s, data, structure, fam, False, nAGQ).objective


def _held(a, value, k, absolute, layout: _Layout):
    """phi with phi_k = value and the others phi(a), a the coordinates of the other size - 1 entries."""
    others = np.arange(layout.size - 1)
    full = jnp.zeros(layout.size, a.dtype).at[others + (others >= k)].set(a[: layout.size - 1])
    return _phi(full, absolute, layout).at[k].set(value)


def _lmm_phi(a, value, k, absolute, blocks, stats, structure: Structure, layout: _Layout):
    """lmm_deviance_phi with phi_k = value, the others phi(a)."""
    return lmm_deviance_phi(_held(a, value, k, absolute, layout), blocks, stats, structure, layout)


def _lmm_theta(theta, blocks, stats, structure: Structure):
    return objective(theta, blocks, stats, structure, False)


def _glmm_phi(a, value, k, absolute, data, structure: Structure, layout: _Layout, fam, nAGQ: int):
    """The GLMM objective with phi_k = value, a = (the other phi's coordinates, beta_s)."""
    phi = _held(a, value, k, absolute, layout)
    return glmm_deviance_phi(phi, a[layout.size - 1 :], data, structure, layout, fam, nAGQ)


def _glmm_beta(a, beta0, null, data, structure: Structure, layout: _Layout, fam, nAGQ: int):
    """The GLMM objective with beta_s = beta0 + null gamma, a = (phi's coordinates, gamma)."""
    phi = _phi(a[: layout.size], jnp.zeros(layout.size, bool), layout)
    return glmm_deviance_phi(phi, beta0 + null @ a[layout.size :], data, structure, layout, fam, nAGQ)


@partial(jax.jit, static_argnames=("fun", "column_diag", "statics"))
def _newton(a0, args: tuple, fun, column_diag: tuple[int, ...], statics: tuple):
    """solver.minimize of fun(a, *args, *statics) from a0: column_diag the sign symmetries (solver.py)."""
    return minimize(lambda a: fun(a, *args, *statics), a0, np.asarray(column_diag, dtype=np.int32), _OPTIONS)


def _minimise(fun, a0: np.ndarray, args: tuple, statics: tuple, column_diag=None) -> tuple[float, np.ndarray]:
    """min over a of fun(a, *args, *statics) by jaxmm's solver; column_diag None: no symmetries. A
    minimisation that solver.finish's probe moved off a diagonal element's 0 continues from there."""
    diag = tuple(int(c) for c in (np.full(len(a0), -1) if column_diag is None else column_diag))
    a = jnp.asarray(a0, dtype=jnp.float64)
    for _ in range(3):
        res = _newton(a, args, fun, diag, statics)
        if bool(res.converged) or not np.isfinite(float(res.fmin)):
            break
        a = res.theta
    return float(res.fmin), np.asarray(res.theta)


class _Problem:
    """A model's parameters and the profiled deviance of each at a value: `deviance(i, v, start)`
    returns (d, the other parameters' optimum, as the next start)."""

    def __init__(self, m: MixedModel):
        if getattr(m, "family", None) is not None and m.family.has_shape:
            raise ValueError(f"profiling a {m.family.name} model (with a shape parameter) is not supported")
        self.m = m
        design = m.design
        self.layout = _layout(m.structure, m.has_dispersion)
        mats = _matrices(m, None, allow_new_levels=False)
        self.back = design.beta_back
        xs = np.asarray(design.matrices.x)
        est_names = [n for n, e in zip(m.coefnames, design.estimable) if e]
        self.labels = [("β", None, n) for n in est_names] + _phi_labels(self.layout)
        self.p = len(est_names)
        beta = m.beta.to_numpy()[design.estimable]
        with computing():
            if m.has_dispersion:
                self.b0, self.scale, y_s = m._response_standardisation()
                w = design.weights
                blocks = (
                    _blocks(m.structure, mats.refs, mats.z, xs)
                    if w is None
                    else _weighted_blocks(m.structure, mats.refs, mats.z, xs, w)
                )
                self.blocks = jax.tree.map(jnp.asarray, blocks)
                matrices = ModelMatrices(
                    jnp.asarray(xs), tuple(map(jnp.asarray, mats.refs)), tuple(map(jnp.asarray, mats.z)), None,
                    None if w is None else jnp.asarray(w),
                )  # fmt: skip
                self.stats = suffstats(matrices, m.structure, jnp.asarray(y_s))
                phi = phi_from_theta(m.theta, m.sigma / self.scale, self.layout)
                self.base = float(lmm_deviance_phi(jnp.asarray(phi), self.blocks, self.stats, m.structure, self.layout))
            else:
                from .glmm.laplace import GlmmData

                weights = np.ones(m.nobs) if design.weights is None else design.weights
                self.data = GlmmData(
                    jnp.asarray(design.y), jnp.asarray(weights), jnp.asarray(xs), tuple(map(jnp.asarray, mats.z)),
                    jnp.asarray(random_effect_index(mats.refs, m.structure.terms)), jnp.asarray(design.offset),
                    pattern=jax.tree.map(jnp.asarray, blocked_pattern(mats.refs, m.structure.terms)),
                )  # fmt: skip
                self.scale = 1.0
                phi = phi_from_theta(m.theta, 1.0, self.layout)
                self.beta_s = design.to_fit_beta(beta)
                self.base = float(
                    glmm_deviance_phi(
                        jnp.asarray(phi), jnp.asarray(self.beta_s), self.data, m.structure, self.layout, m.family,
                        m.nAGQ,
                    )
                )  # fmt: skip
        self.phi_hat = phi
        self.estimates = np.concatenate([beta, self._display(phi)])
        self.ses = m.stderror.to_numpy()[design.estimable]

    def _display(self, phi: np.ndarray) -> np.ndarray:
        """phi in the response's units (the LMM's is fitted on y / scale; correlations unchanged)."""
        out = np.array(phi, dtype=np.float64)
        out[~self.layout.is_corr] *= self.scale
        return out

    def bounds(self, i: int) -> tuple[float, float]:
        """Where parameter i may go (lme4's lower/upper): sds >= 0, correlations in [-1, 1] (short of
        +-1 by 1e-10)."""
        kind = self.labels[i][0]
        if kind == "β":
            return -np.inf, np.inf
        return (-_CORR_EDGE, _CORR_EDGE) if kind == "ρ" else (0.0, np.inf)

    def start(self, i: int) -> np.ndarray:
        """The others' values at the optimum, in the coordinates `deviance` optimises them in."""
        a_hat = _coordinates(self.phi_hat, self.layout)
        if self.m.has_dispersion:
            return np.asarray(self.m.theta) if i < self.p else np.delete(a_hat, i - self.p)
        if i < self.p:
            return np.concatenate([a_hat, _complement(self.back[i]).T @ self.beta_s])
        return np.concatenate([np.delete(a_hat, i - self.p), self.beta_s])

    def deviance(self, i: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """d with parameter i held at `value` (in the response's units), the others optimised from start."""
        m = self.m
        with computing():
            if i < self.p:
                return self._fixed_effect(i, value, start)
            k = i - self.p
            corr = self.labels[i][0] == "ρ"  # held short of +-1: chol(R)'s derivative is infinite there
            v = float(np.clip(value, -_CORR_EDGE, _CORR_EDGE)) if corr else value / self.scale
            args = (jnp.asarray(v), k, jnp.asarray(_pair_sds(self.layout, k)))
            if m.has_dispersion:
                return _minimise(_lmm_phi, start, (*args, self.blocks, self.stats), (m.structure, self.layout))
            statics = (m.structure, self.layout, m.family, m.nAGQ)
            return _minimise(_glmm_phi, start, (*args, self.data), statics)

    def _fixed_effect(self, j: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """beta_j = value: beta_s (of X_s; for an LMM of y / scale) = beta0 + N gamma with c'beta0 the
        constraint, c = row j of A^-1, and N an orthonormal basis of c's complement."""
        m, c = self.m, self.back[j]
        target = (value - c @ self.b0) / self.scale if m.has_dispersion else value
        beta0, null = jnp.asarray(c * target / (c @ c)), jnp.asarray(_complement(c))
        if m.has_dispersion:
            blocks, stats = self.blocks, self.stats
            reduced_blocks = blocks._replace(z1x=blocks.z1x @ null, zrx=blocks.zrx @ null, xx=null.T @ blocks.xx @ null)
            reduced_stats = stats._replace(
                z1y=stats.z1y - blocks.z1x @ beta0,
                zry=stats.zry - blocks.zrx @ beta0,
                xy=null.T @ (stats.xy - blocks.xx @ beta0),
                yy=stats.yy - 2.0 * beta0 @ stats.xy + beta0 @ blocks.xx @ beta0,
            )
            structure = Structure(m.structure.terms, m.structure.n, m.structure.p - 1)
            return _minimise(_lmm_theta, start, (reduced_blocks, reduced_stats), (structure,), structure.column_diag)
        statics = (m.structure, self.layout, m.family, m.nAGQ)
        return _minimise(_glmm_beta, start, (beta0, null, self.data), statics)


@dataclass
class MixedModelProfile:
    """The likelihood profile of every parameter of a fitted model (see the module docstring).

    tbl: the profile's points, one row each: type ("β", "σ", "ρ"), group, names (as a bootstrap's
    allpars), value, zeta. confint(level): the profile intervals."""

    model: MixedModel
    tbl: pd.DataFrame
    _problem: _Problem = field(repr=False)
    _starts: dict = field(repr=False)

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """{p : |zeta(p)| <= z}, z = Phi^-1((1 + level) / 2), for every parameter: type, group,
        names, lower, upper; the roots found exactly on the profile (Brent's method)."""
        from .results import _check_level

        _check_level(level)
        z = float(sps.norm.ppf((1.0 + level) / 2.0))
        rows = []
        for i, label in enumerate(self._problem.labels):
            part = self.tbl[_matches(self.tbl, label)].sort_values("value")
            ends = [self._root(i, part, -z), self._root(i, part, z)]
            rows.append((*label, *ends))
        return pd.DataFrame(rows, columns=["type", "group", "names", "lower", "upper"])

    def _zeta(self, i: int, value: float, start: np.ndarray) -> float:
        problem = self._problem
        d, _ = problem.deviance(i, value, start)
        return float(np.sign(value - problem.estimates[i]) * np.sqrt(max(d - problem.base, 0.0)))

    def _root(self, i: int, part: pd.DataFrame, target: float) -> float:
        """The value where zeta = target between the profile's two points that bracket it; the
        parameter's bound where the profile stops at it short of target."""
        values, zetas = part["value"].to_numpy(), part["zeta"].to_numpy()
        if target < 0:
            below = np.flatnonzero(zetas <= target)
            if len(below) == 0:  # stopped at the lower bound (a standard deviation at 0) short of target
                return float(values[0]) if values[0] == self._problem.bounds(i)[0] else np.nan
            lo, hi = values[below[-1]], values[below[-1] + 1]
        else:
            above = np.flatnonzero(zetas >= target)
            if len(above) == 0:
                return float(values[-1]) if values[-1] == self._problem.bounds(i)[1] else np.nan
            lo, hi = values[above[0] - 1], values[above[0]]
        known = np.array(list(self._starts[i]))
        start = self._starts[i][known[np.argmin(np.abs(known - (lo + hi) / 2))]]
        return float(optimize.brentq(lambda v: self._zeta(i, v, start) - target, lo, hi, xtol=1e-10, rtol=1e-12))


def _name(label) -> str:
    return " ".join(str(part) for part in label if part is not None)


def _matches(tbl: pd.DataFrame, label) -> np.ndarray:
    kind, group, names = label
    same = lambda col, v: tbl[col].isna() if v is None else tbl[col] == v
    return (same("type", kind) & same("group", group) & same("names", names)).to_numpy()


def _complement(c: np.ndarray) -> np.ndarray:
    """(p, p - 1): an orthonormal basis of the vectors orthogonal to c."""
    return np.linalg.svd(c[None, :])[2][1:].T


def profile(m: MixedModel, *, alphamax: float = 0.01, maxpts: int = 100) -> MixedModelProfile:
    """The likelihood profile of every parameter of m (lme4's profile.merMod; see the module
    docstring). Each profile runs from the estimate in both directions, with lme4's steps (the next
    value where zeta is about a further cutoff / 8, from the last two points), until |zeta| exceeds
    lme4's cutoff sqrt(chi2_{1 - alphamax}(number of parameters)) or the parameter reaches a bound;
    a REML fit is profiled by its ML refit (with a warning, as lme4's message)."""
    m._require_fit()
    if m.REML:
        warn("profiling the ML refit of the REML fit (as lme4's profile)", UserWarning)
        m = copy.copy(m).fit(REML=False)
    problem = _Problem(m)
    npar = len(problem.labels)
    cutoff = float(np.sqrt(sps.chi2.ppf(1.0 - alphamax, npar)))
    delta = cutoff / 8.0
    rows, starts = [], []
    for i, label in enumerate(problem.labels):
        est = problem.estimates[i]
        lo_bound, hi_bound = problem.bounds(i)
        points = {est: (0.0, problem.start(i))}
        first = est + delta * problem.ses[i] if i < problem.p else (est * 1.01 if est != 0 else 0.001)
        for direction in (1.0, -1.0):
            prev_v, prev_z, start = est, 0.0, problem.start(i)
            v = first if direction > 0 else est - (first - est)
            for _ in range(maxpts):
                v = min(max(v, lo_bound), hi_bound)
                if v in points:
                    break
                d, start = problem.deviance(i, v, start)
                if not np.isfinite(d):
                    warn(
                        f"the profile of {_name(label)} stopped at {v:.6g}: no finite deviance",
                        RuntimeWarning,
                    )
                    break
                z = float(np.sign(v - est) * np.sqrt(max(d - problem.base, 0.0)))
                points[v] = (z, start)
                if abs(z) > cutoff or v in (lo_bound, hi_bound):
                    break
                slope = (v - prev_v) / (z - prev_z) if z != prev_z else (v - prev_v)
                step = min(abs(delta * slope), 10.0 * abs(v - prev_v))
                prev_v, prev_z = v, z
                v = v + direction * max(step, 1e-8 * max(abs(v), 1.0))
        for v, (z, _) in sorted(points.items()):
            rows.append((*label, v, z))
        starts.append({v: s for v, (_, s) in points.items()})
    tbl = pd.DataFrame(rows, columns=["type", "group", "names", "value", "zeta"])
    return MixedModelProfile(m, tbl, problem, dict(enumerate(starts)))


def _labels(m: MixedModel) -> list[tuple[str, str | None, str | None]]:
    """The parameters' (type, group, names) in a bootstrap's allpars order: β, per term σ then ρ, residual σ."""
    est = [n for n, e in zip(m.coefnames, m.design.estimable) if e]
    return [("β", None, n) for n in est] + _phi_labels(_layout(m.structure, m.has_dispersion))


def confint(m: MixedModel, level: float = 0.95, method: str = "wald", *, nsim: int = 500, seed=None) -> pd.DataFrame:
    """lme4's confint.merMod, as a table of type, group, names, lower, upper (a bootstrap's shortestcovint's):

    - "wald": beta_j +- z se_j, z = Phi^-1((1 + level) / 2); the variance components' ends NaN (lme4's NA);
    - "profile": profile(m).confint(level), the likelihood-profile intervals;
    - "boot": the percentile (equal-tailed) intervals of jaxmm.parametricbootstrap(seed, nsim, m), lme4's
      boot.type = "perc"."""
    from .results import _check_level

    _check_level(level)
    if method == "profile":
        return profile(m).confint(level)
    labels = _labels(m)
    if method == "wald":
        z = float(sps.norm.ppf((1.0 + level) / 2.0))
        beta, se = m.beta.to_numpy()[m.design.estimable], m.stderror.to_numpy()[m.design.estimable]
        ends = [(b - z * s, b + z * s) for b, s in zip(beta, se)] + [(np.nan, np.nan)] * (len(labels) - len(beta))
    elif method == "boot":
        from .bootstrap import parametricbootstrap

        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        allpars = parametricbootstrap(seed, nsim, m, progress=False).allpars
        ends = []
        for kind, group, names in labels:
            rows = _matches(allpars, (kind, group, names))
            lo, hi = np.nanquantile(allpars["value"].to_numpy()[rows], [(1 - level) / 2, (1 + level) / 2])
            ends.append((float(lo), float(hi)))
    else:
        raise ValueError(f"method must be 'wald', 'profile' or 'boot', got {method!r}")
    return pd.DataFrame(
        [(*label, *e) for label, e in zip(labels, ends)], columns=["type", "group", "names", "lower", "upper"]
    )
