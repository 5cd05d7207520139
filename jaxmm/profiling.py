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

Intervals are the exact roots of zeta(p) = +-z (Brent's method on the profile itself, each value
an optimisation), where lme4 interpolates its grid with splines: the two agree to about 1e-3
relative. Where the profile does not reach -z before a bound (a standard deviation at 0) the end
is the bound, as lme4's.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from ._compile import computing
from .covariance import covariance_pattern, lambdas
from .design import ModelMatrices, Structure, _blocks, suffstats
from .deviance import factorize, objective, profiled_terms
from .mixedmodel import MixedModel
from .predict import _index, _matrices

_CORR_EDGE = 1.0 - 1e-10  # correlations are kept inside (-1, 1): chol(R) has no derivative at +-1


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


def _phi_bounds(layout: _Layout) -> list[tuple[float | None, float | None]]:
    bounds = []
    for t, pairs in zip(layout.structure.terms, layout.pairs):
        bounds += [(0.0, None)] * t.k + [(-_CORR_EDGE, _CORR_EDGE)] * len(pairs)
    return bounds + ([(1e-12, None)] if layout.dispersion else [])


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


def _with_fixed(x, value, others, k, size: int):
    """The full vector: x's first entries at positions `others`, `value` at position k."""
    return jnp.zeros(size, x.dtype).at[others].set(x[: others.shape[0]]).at[k].set(value)


def _lmm_phi(x, value, others, k, blocks, stats, structure: Structure, layout: _Layout):
    """lmm_deviance_phi with phi_k = value and the others x."""
    return lmm_deviance_phi(_with_fixed(x, value, others, k, layout.size), blocks, stats, structure, layout)


def _lmm_theta(theta, blocks, stats, structure: Structure):
    return objective(theta, blocks, stats, structure, False)


def _glmm_phi(x, value, others, k, data, structure: Structure, layout: _Layout, fam, nAGQ: int):
    """The GLMM objective with phi_k = value, x = (the other phi, beta_s)."""
    phi = _with_fixed(x, value, others, k, layout.size)
    return glmm_deviance_phi(phi, x[others.shape[0] :], data, structure, layout, fam, nAGQ)


def _glmm_beta(x, beta0, null, data, structure: Structure, layout: _Layout, fam, nAGQ: int):
    """The GLMM objective with beta_s = beta0 + null gamma, x = (phi, gamma)."""
    return glmm_deviance_phi(x[: layout.size], beta0 + null @ x[layout.size :], data, structure, layout, fam, nAGQ)


def _value_grad(fun, static: tuple[str, ...]):
    return jax.jit(jax.value_and_grad(fun), static_argnames=static)


_lmm_phi_vg = _value_grad(_lmm_phi, ("structure", "layout"))
_lmm_theta_vg = _value_grad(_lmm_theta, ("structure",))
_glmm_phi_vg = _value_grad(_glmm_phi, ("structure", "layout", "fam", "nAGQ"))
_glmm_beta_vg = _value_grad(_glmm_beta, ("structure", "layout", "fam", "nAGQ"))


def _minimise(value_grad, x0: np.ndarray, bounds) -> tuple[float, np.ndarray]:
    """min of a function by L-BFGS-B, given its jitted value_and_grad of x (x0 kept within bounds)."""
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])

    def f(x):
        v, g = value_grad(jnp.asarray(x))
        if not np.isfinite(v):  # a trial step out of the function's domain (sigma -> 0): backtrack
            return 1e300, np.zeros_like(x)
        return float(v), np.asarray(g, dtype=np.float64)

    if len(x0) == 0:
        return f(np.zeros(0))[0], x0
    x = np.clip(x0, lo, hi)
    for _ in range(2):  # once more from where it stopped: a backtrack from a step out of the domain can stop it early
        res = optimize.minimize(
            f, x, jac=True, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 5000}
        )
        x = res.x
    return float(res.fun), res.x


class _Problem:
    """A model's parameters and the profiled deviance of each at a value: `deviance(i, v, start)`
    returns (d, the other parameters' optimum, as the next start)."""

    def __init__(self, m: MixedModel):
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
                self.mats = ModelMatrices(
                    jnp.asarray(xs), tuple(map(jnp.asarray, mats.refs)), tuple(map(jnp.asarray, mats.z))
                )
                self.blocks = jax.tree.map(jnp.asarray, _blocks(m.structure, mats.refs, mats.z, xs))
                self.stats = suffstats(self.mats, m.structure, jnp.asarray(y_s))
                phi = phi_from_theta(m.theta, m.sigma / self.scale, self.layout)
                self.base = float(lmm_deviance_phi(jnp.asarray(phi), self.blocks, self.stats, m.structure, self.layout))
            else:
                from .glmm.laplace import GlmmData

                weights = np.ones(m.nobs) if design.weights is None else design.weights
                self.data = GlmmData(
                    jnp.asarray(design.y), jnp.asarray(weights), jnp.asarray(xs), tuple(map(jnp.asarray, mats.z)),
                    _index(mats, m.structure.terms),
                )  # fmt: skip
                self.scale = 1.0
                phi = phi_from_theta(m.theta, 1.0, self.layout)
                self.beta_s = design.to_fit_beta(beta)
                self.base = float(
                    glmm_deviance_phi(
                        jnp.asarray(phi),
                        jnp.asarray(self.beta_s),
                        self.data,
                        m.structure,
                        self.layout,
                        m.family,
                        m.nAGQ,
                    )
                )
        self.phi_hat = phi
        self.estimates = np.concatenate([beta, self._display(phi)])
        self.ses = m.stderror.to_numpy()[design.estimable]

    def _display(self, phi: np.ndarray) -> np.ndarray:
        """phi in the response's units (the LMM's is fitted on y / scale; correlations unchanged)."""
        out = np.array(phi, dtype=np.float64)
        corr = np.array([label[0] == "ρ" for label in _phi_labels(self.layout)])
        out[~corr] *= self.scale
        return out

    def bounds(self, i: int) -> tuple[float, float]:
        """Where parameter i may go (lme4's lower/upper): sds >= 0, correlations in [-1, 1]."""
        if i < self.p:
            return -np.inf, np.inf
        lo, hi = _phi_bounds(self.layout)[i - self.p]
        lo = 0.0 if lo == 1e-12 else lo
        return (-np.inf if lo is None else lo), (np.inf if hi is None else hi)

    def start(self, i: int) -> np.ndarray:
        """The others' values at the optimum, in the coordinates `deviance` optimises them in."""
        if self.m.has_dispersion:
            return np.asarray(self.m.theta) if i < self.p else np.delete(self.phi_hat, i - self.p)
        if i < self.p:
            return np.concatenate([self.phi_hat, _complement(self.back[i]).T @ self.beta_s])
        return np.concatenate([np.delete(self.phi_hat, i - self.p), self.beta_s])

    def deviance(self, i: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """d with parameter i held at `value` (in the response's units), the others optimised from start."""
        m = self.m
        with computing():
            if i < self.p:
                return self._fixed_effect(i, value, start)
            k = i - self.p
            v = value / (1.0 if self.labels[i][0] == "ρ" else self.scale)
            others = jnp.asarray(np.delete(np.arange(self.layout.size), k))
            bounds = [b for j, b in enumerate(_phi_bounds(self.layout)) if j != k]
            if m.has_dispersion:
                vg = partial(
                    _lmm_phi_vg, value=v, others=others, k=k, blocks=self.blocks, stats=self.stats,
                    structure=m.structure, layout=self.layout,
                )  # fmt: skip
                return _minimise(vg, start, bounds)
            vg = partial(
                _glmm_phi_vg, value=v, others=others, k=k, data=self.data, structure=m.structure,
                layout=self.layout, fam=m.family, nAGQ=m.nAGQ,
            )  # fmt: skip
            return _minimise(vg, start, bounds + [(None, None)] * self.p)

    def _fixed_effect(self, j: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """beta_j = value: beta_s (of X_s; for an LMM of y / scale) = beta0 + N gamma with c'beta0 the
        constraint, c = row j of A^-1, and N an orthonormal basis of c's complement."""
        m, c = self.m, self.back[j]
        if m.has_dispersion:
            target = (value - c @ self.b0) / self.scale
        else:
            target = value
        beta0, null = c * target / (c @ c), _complement(c)
        if m.has_dispersion:
            blocks, stats = self.blocks, self.stats
            b0, n0 = jnp.asarray(beta0), jnp.asarray(null)
            reduced_blocks = blocks._replace(z1x=blocks.z1x @ n0, zrx=blocks.zrx @ n0, xx=n0.T @ blocks.xx @ n0)
            reduced_stats = stats._replace(
                z1y=stats.z1y - blocks.z1x @ b0,
                zry=stats.zry - blocks.zrx @ b0,
                xy=n0.T @ (stats.xy - blocks.xx @ b0),
                yy=stats.yy - 2.0 * b0 @ stats.xy + b0 @ blocks.xx @ b0,
            )
            structure = Structure(m.structure.terms, m.structure.n, m.structure.p - 1)
            vg = partial(_lmm_theta_vg, blocks=reduced_blocks, stats=reduced_stats, structure=structure)
            bounds = [(0.0, None) if lb == 0.0 else (None, None) for lb in m.lowerbd]
            return _minimise(vg, start, bounds)
        vg = partial(
            _glmm_beta_vg, beta0=jnp.asarray(beta0), null=jnp.asarray(null), data=self.data, structure=m.structure,
            layout=self.layout, fam=m.family, nAGQ=m.nAGQ,
        )  # fmt: skip
        return _minimise(vg, start, _phi_bounds(self.layout) + [(None, None)] * (self.p - 1))


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
        warnings.warn("profiling the ML refit of the REML fit (as lme4's profile)", UserWarning, stacklevel=2)
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
                    warnings.warn(
                        f"the profile of {_name(label)} stopped at {v:.6g}: no finite deviance",
                        RuntimeWarning,
                        stacklevel=2,
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
