"""Linear mixed models: the user-facing `LinearMixedModel` and the pure fitting function behind it."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array
from scipy import stats as sps

from .design import Blocks, Design, Structure, SuffStats, build_design, suffstats
from .deviance import factorize, fixed_effects, lambdas, modes_by_term, objective, solve_pls
from ._compile import is_small, jit
from .solver import SolverOptions, default_options, minimize


class FitResult(NamedTuple):
    """Everything a fit of one response yields (one lane of a bootstrap batch)."""

    objective: Array
    theta: Array
    beta: Array  # estimable coefficients only
    stderror: Array
    sigma: Array
    converged: Array
    niter: Array
    hessian: Array  # of the objective at theta (exact, or BFGS's approximation)


def fit_response(
    stats: SuffStats,
    theta0: Array,
    blocks: Blocks,
    structure: Structure,
    reml: Array | bool,
    opts: SolverOptions,
    h0: Array | None = None,
    budget: Array | None = None,
) -> FitResult:
    """Fit the model to the response summarised by `stats`, from `theta0`. Pure: jit and vmap it.

    h0: an approximate Hessian at theta0 for gradient-only (BFGS) iterations; None for Newton.
    budget: at most this many iterations (below opts.maxiter), for a continued fit.

    sigma-hat^2 = pwrss / n (ML) or pwrss / (n - p) (REML); se(beta) = sigma-hat * sqrt(diag((L_X L_X')^-1)).
    """
    fun = partial(objective, blocks=blocks, stats=stats, structure=structure, reml=reml)
    res = minimize(fun, theta0, structure.column_diag, opts, h0, budget)
    fixed = fixed_effects(factorize(res.theta, blocks, stats, structure), structure)
    dof = structure.n - jnp.asarray(reml, theta0.dtype) * structure.p
    sigma = jnp.sqrt(fixed.pwrss / dof)
    se = sigma * jnp.sqrt(jnp.diagonal(fixed.vcov))
    return FitResult(res.fmin, res.theta, fixed.beta, se, sigma, res.converged, res.niter, res.hessian)


_fit_response = jit(fit_response, static_argnames=("structure", "opts"))


@partial(jit, static_argnames=("structure",))
def objective_hessian(theta: Array, blocks: Blocks, stats: SuffStats, structure: Structure, reml: Array) -> Array:
    return jax.hessian(objective)(theta, blocks, stats, structure, reml)


def floor_eigenvalues(h) -> np.ndarray:
    """A Hessian made positive definite (eigenvalues floored), as a start for BFGS."""
    eig, vec = np.linalg.eigh(np.asarray(h))
    return (vec * np.maximum(eig, 1e-3 * np.max(np.abs(eig)) + 1e-8)) @ vec.T


@partial(jit, static_argnames=("structure",))
def _modes_and_vcov(theta: Array, blocks: Blocks, stats: SuffStats, structure: Structure):
    """Spherical conditional modes u, (L_X L_X')^-1 and the lambda_t at theta (once per fit)."""
    factor = factorize(theta, blocks, stats, structure)
    sol = solve_pls(factor, theta, blocks, stats, structure)
    return sol.u1, sol.ur, fixed_effects(factor, structure).vcov, lambdas(theta, structure)


def solver_options(overrides: dict[str, Any] | None, dtype=np.float64) -> SolverOptions:
    """SolverOptions for fits in `dtype` (see solver.default_options), with MixedModels.jl-style
    overrides (`ftol_rel`, `ftol_abs`, `xtol_abs`, `maxfeval`/`maxiter`)."""
    overrides = dict(overrides or {})
    if "maxfeval" in overrides:
        overrides["maxiter"] = overrides.pop("maxfeval")
    unknown = set(overrides) - set(SolverOptions._fields)
    if unknown:
        raise ValueError(f"unknown solver option {sorted(unknown)[0]!r}; known: {', '.join(SolverOptions._fields)}, maxfeval")
    for key, value in overrides.items():
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"solver option {key!r} must be a finite non-negative number, got {value!r}")
    opts = default_options(dtype)._replace(**overrides)
    return opts._replace(maxiter=int(opts.maxiter))


def _checked_reml(value) -> bool:
    # bool("no") is True: anything but a boolean is a mistake
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"REML must be True or False, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class OptSummary:
    """How the fit went: start, optimum, convergence and the solver settings used."""

    initial: np.ndarray
    final: np.ndarray
    fmin: float
    converged: bool
    niter: int
    options: SolverOptions


class MixedModel:
    """What linear and generalized linear mixed models share once fitted: the design, theta, the
    fixed effects and the random effects b = Lambda u. A subclass's fit() fills `optsum` and
    `_fit` (beta, se, lambdas and the spherical modes u per term)."""

    design: Design
    REML: bool
    optsum: OptSummary | None

    def _require_fit(self) -> dict[str, Any]:
        if self.optsum is None:
            raise RuntimeError("the model has not been fitted yet; call .fit()")
        return self._fit

    # ---- structure ----------------------------------------------------------------------
    @property
    def structure(self) -> Structure:
        return self.design.structure

    @property
    def formula(self) -> str:
        return self.design.formula.text

    @property
    def nobs(self) -> int:
        return self.structure.n

    @property
    def ndropped(self) -> int:
        return self.design.ndropped

    @property
    def lowerbd(self) -> np.ndarray:
        return self.structure.lowerbd

    @property
    def coefnames(self) -> tuple[str, ...]:
        return self.design.coefnames

    @property
    def rank(self) -> int:
        return self.structure.p

    def _checked_theta(self, theta, name: str) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        if theta.shape != (self.structure.ntheta,):
            raise ValueError(f"{name} must have length {self.structure.ntheta}, got {theta.size}")
        if not np.all(np.isfinite(theta)) or np.any(theta < self.lowerbd):
            raise ValueError(f"{name} must be finite with diagonal elements >= 0, got {theta.tolist()}")
        return theta

    # ---- estimates ----------------------------------------------------------------------
    @property
    def objective(self) -> float:
        """-2 log-likelihood at the optimum (for an LMM fitted by REML, the REML criterion)."""
        self._require_fit()
        return self.optsum.fmin

    @property
    def theta(self) -> np.ndarray:
        self._require_fit()
        return self.optsum.final.copy()

    def _by_coef(self, estimable_values: np.ndarray, fill: float) -> pd.Series:
        full = np.full(len(self.coefnames), fill)
        full[self.design.estimable] = estimable_values
        return pd.Series(full, index=list(self.coefnames), dtype=np.float64)

    @property
    def beta(self) -> pd.Series:
        """Fixed-effects estimates by coefficient name; inestimable (aliased) ones are -0.0."""
        return self._by_coef(self._require_fit()["beta"], -0.0)

    fixef = beta

    @property
    def stderror(self) -> pd.Series:
        """Standard errors of the fixed effects; NaN for inestimable coefficients."""
        return self._by_coef(self._require_fit()["se"], np.nan)

    def coeftable(self) -> pd.DataFrame:
        """Estimate, standard error, Wald z and two-sided p-value per fixed-effects coefficient."""
        beta, se = self.beta, self.stderror
        z = beta / se
        return pd.DataFrame({"Est.": beta, "SE": se, "z": z, "p": 2.0 * sps.norm.sf(np.abs(z))})

    @property
    def loglikelihood(self) -> float:
        if self.REML:
            raise ValueError("the log-likelihood is defined for ML fits; refit with REML=False")
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.dof

    @property
    def bic(self) -> float:
        return self.objective + self.dof * math.log(self.nobs)

    def issingular(self, atol: float = 0.0) -> bool:
        """True when some bounded component of theta is at (within atol of) its lower bound."""
        return bool(np.any(self.theta - self.lowerbd <= atol))

    def _varcorr_rows(self, scale: float) -> list[tuple]:
        """Per term: each column's variance and standard deviation, then each pair's covariance and
        correlation (for correlated terms), of b ~ N(0, scale^2 Lambda Lambda')."""
        rows = []
        for term, lam in zip(self.structure.terms, self._require_fit()["lambdas"]):
            cov = scale**2 * lam @ lam.T
            sd = np.sqrt(np.diag(cov))
            rows += [(term.group, c, None, cov[i, i], sd[i]) for i, c in enumerate(term.columns)]
            if any(r != c for r, c in zip(term.theta_rows, term.theta_cols)):
                for i in range(term.k):
                    for j in range(i + 1, term.k):
                        corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                        rows.append((term.group, term.columns[i], term.columns[j], cov[i, j], corr))
        return rows

    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects b = Lambda u, per grouping factor (levels x columns)."""
        fit = self._require_fit()
        return {
            term.group: pd.DataFrame(u @ lam.T, index=pd.Index(levels, name=term.group), columns=list(term.columns))
            for term, u, lam, levels in zip(self.structure.terms, fit["u"], fit["lambdas"], self.design.levels)
        }

    def _linear_predictor(self) -> np.ndarray:
        """X beta-hat + Z b-hat."""
        mats, beta = self.design.matrices, self._require_fit()["beta"]
        eta = np.asarray(mats.x) @ beta
        for term, refs, z in zip(self.structure.terms, mats.refs, mats.z):
            b = self.ranef()[term.group].to_numpy()
            eta = eta + np.sum(np.asarray(z) * b[np.asarray(refs)], axis=1)
        return eta

    def __repr__(self) -> str:
        if self.optsum is None:
            return f"{type(self).__name__}({self.formula!r}, not fitted)"
        return self.summary()


class LinearMixedModel(MixedModel):
    """A linear mixed-effects model y = X beta + Z b + e, b ~ N(0, sigma^2 Lambda Lambda'), e ~ N(0, sigma^2 I).

    Construct, then `fit()`; or use `jaxmm.fit(formula, data)`, which does both.
    Rows with a missing value in a column the formula uses are dropped (lme4's default) with a warning;
    `ndropped` says how many.
    """

    def __init__(self, formula: str, data: pd.DataFrame, *, REML: bool = False):
        self.design: Design = build_design(formula, data)
        self.REML = _checked_reml(REML)
        self.optsum: OptSummary | None = None
        self._fit: dict[str, np.ndarray] = {}

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, *, REML: bool | None = None, optsum_overrides: dict[str, Any] | None = None, theta0=None) -> LinearMixedModel:
        """Minimise the profiled deviance (ML) or REML criterion over theta; returns self."""
        reml = self.REML if REML is None else _checked_reml(REML)
        opts = solver_options(optsum_overrides)
        start = self.initial_theta() if theta0 is None else self._checked_theta(theta0, "theta0")
        self.REML = reml
        with jax.enable_x64(True):
            blocks = jax.tree.map(jnp.asarray, self.design.blocks)
            stats = suffstats(self.design.matrices, self.structure, jnp.asarray(self.design.y))
            theta0, reml = jnp.asarray(start), jnp.asarray(self.REML)
            h0 = None
            if not is_small(self.structure):
                # An exact Hessian of a large model costs as much as several gradients (it
                # differentiates dense factorisations twice): BFGS steps from the exact start Hessian.
                h0 = jnp.asarray(floor_eigenvalues(objective_hessian(theta0, blocks, stats, structure=self.structure, reml=reml)))
            res = _fit_response(stats, theta0, blocks, structure=self.structure, reml=reml, opts=opts, h0=h0)
            u1, ur, vcov, lams = _modes_and_vcov(res.theta, blocks, stats, structure=self.structure)
            self._fit = {
                "beta": np.asarray(res.beta),
                "se": np.asarray(res.stderror),
                "sigma": float(res.sigma),
                "unscaled_vcov": np.asarray(vcov),
                "u": modes_by_term(np.concatenate([np.ravel(u1), np.asarray(ur)]), self.structure),
                "lambdas": tuple(np.asarray(lam) for lam in lams),
                "hessian": np.asarray(res.hessian),
            }
            self.optsum = OptSummary(
                initial=np.asarray(start),
                final=np.asarray(res.theta),
                fmin=float(res.objective),
                converged=bool(res.converged),
                niter=int(res.niter),
                options=opts,
            )
        if not self.optsum.converged:
            warnings.warn(
                f"the fit did not converge in {self.optsum.niter} iterations; see m.optsum", RuntimeWarning, stacklevel=2
            )
        return self

    def initial_theta(self) -> np.ndarray:
        """lme4's start: 1 for diagonal elements of each lambda_t, 0 below the diagonal."""
        return np.where(self.lowerbd == 0.0, 1.0, 0.0)

    @property
    def dof(self) -> int:
        """Number of parameters: fixed effects (estimable), theta, and sigma."""
        return self.rank + self.structure.ntheta + 1

    # ---- estimates ----------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        return self._require_fit()["sigma"]

    @property
    def vcov(self) -> pd.DataFrame:
        """sigma^2 (X' V^-1 X)^-1 over all coefficients (NaN rows/columns for inestimable ones)."""
        fit = self._require_fit()
        names = list(self.coefnames)
        est = self.design.estimable
        full = np.full((len(names), len(names)), np.nan)
        full[np.ix_(est, est)] = fit["sigma"] ** 2 * fit["unscaled_vcov"]
        return pd.DataFrame(full, index=names, columns=names)

    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's as.data.frame(VarCorr(m)): grp, var1, var2, vcov, sdcor;
        the random-effects terms, then the residual."""
        sigma = self.sigma
        rows = self._varcorr_rows(sigma) + [("Residual", None, None, sigma**2, sigma)]
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def fitted(self) -> np.ndarray:
        """X beta-hat + Z b-hat."""
        return self._linear_predictor()

    def residuals(self) -> np.ndarray:
        return self.design.y - self.fitted()

    # ---- display ------------------------------------------------------------------------
    def summary(self) -> str:
        """A MixedModels.jl-style summary: criteria, variance components, fixed effects."""
        self._require_fit()
        method = "REML" if self.REML else "maximum likelihood"
        lines = [f"Linear mixed model fit by {method}", f" {self.formula}"]
        if self.REML:
            lines.append(f" REML criterion at convergence: {self.objective:.4f}")
        else:
            header = ("logLik", "-2 logLik", "AIC", "BIC")
            values = (self.loglikelihood, self.objective, self.aic, self.bic)
            lines += ["  " + "".join(f"{h:>12}" for h in header), "  " + "".join(f"{v:12.4f}" for v in values)]
        lines += ["", "Variance components:", _format_varcorr(self.varcorr())]
        groups = "; ".join(f"{t.group} {t.nlevels}" for t in self.structure.terms)
        lines += [f" Number of obs: {self.nobs}; levels of grouping factors: {groups}", ""]
        if not self.optsum.converged:
            lines.append(" WARNING: the optimiser did not converge")
        lines += ["Fixed-effects parameters:", _format_coeftable(self.coeftable())]
        if self.ndropped:
            lines.append(f" ({self.ndropped} rows with missing values dropped)")
        return "\n".join(lines)


def _format_varcorr(vc: pd.DataFrame) -> str:
    sds = vc[vc["var2"].isna()]
    rows = [("", "Column", "Variance", "Std.Dev.", "Corr.")]
    last_group = None
    for _, r in sds.iterrows():
        corr = vc[(vc["grp"] == r["grp"]) & (vc["var2"] == r["var1"])]["sdcor"].tolist()
        group = r["grp"] if r["grp"] != last_group else ""
        last_group = r["grp"]
        rows.append((group, "" if pd.isna(r["var1"]) else r["var1"], f"{r['vcov']:.6g}", f"{r['sdcor']:.6g}", " ".join(f"{c:+.2f}" for c in corr)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows)


def _format_coeftable(ct: pd.DataFrame) -> str:
    def pval(p: float) -> str:
        if not np.isfinite(p):
            return ""
        if p < 1e-99:
            return "<1e-99"
        return f"<1e{math.floor(math.log10(p)) + 1}" if p < 1e-4 else f"{p:.4f}"

    body = pd.DataFrame(
        {
            "Coef.": ct["Est."].map(lambda v: f"{v:.6g}"),
            "Std. Error": ct["SE"].map(lambda v: f"{v:.6g}"),
            "z": ct["z"].map(lambda v: f"{v:.2f}"),
            "Pr(>|z|)": ct["p"].map(pval),
        },
        index=ct.index,
    )
    return body.to_string()


def fit(
    formula: str,
    data: pd.DataFrame,
    *,
    REML: bool = False,
    optsum_overrides: dict[str, Any] | None = None,
    family: str | None = None,
    link: str | None = None,
    weights=None,
    fast: bool = False,
    nAGQ: int = 1,
):
    """Fit a linear mixed model by ML (default) or REML, with lme4's formula syntax; with `family`
    ("bernoulli", "binomial", "poisson"), a generalized linear mixed model by the Laplace
    approximation or, with nAGQ > 1, adaptive Gauss-Hermite quadrature
    (jaxmm.glmm.GeneralizedLinearMixedModel; `link`, `weights`, `fast`, `nAGQ`).

    >>> m = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy"))
    """
    if family is None or (isinstance(family, str) and family.lower() == "gaussian"):
        if link not in (None, "identity") or weights is not None or fast is not False or nAGQ != 1:
            raise ValueError("link, weights, fast and nAGQ apply to a generalized linear mixed model (family='bernoulli', 'binomial' or 'poisson')")
        return LinearMixedModel(formula, data, REML=REML).fit(optsum_overrides=optsum_overrides)
    if REML is not False:
        raise ValueError(f"REML applies to linear mixed models; a generalized one (family={family!r}) is fitted by ML")
    from .glmm import GeneralizedLinearMixedModel  # glmm.py builds on this module

    return GeneralizedLinearMixedModel(formula, data, family, link=link, weights=weights).fit(fast=fast, nAGQ=nAGQ, optsum_overrides=optsum_overrides)
