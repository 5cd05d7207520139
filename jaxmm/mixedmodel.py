"""What linear and generalized linear mixed models share once fitted: the design, theta, the fixed
effects, the random effects b = Lambda u, and the bookkeeping of a fit.

A subclass (jaxmm/lmm.py, jaxmm/glmm/model.py) fits its criterion and hands the result to
`_store_fit` as a `FitState`; everything here reads that state.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import display
from ._warn import warn
from .covariance import covariances, initial_theta, sd_corr
from .design import Design, Structure
from .solver import SolverOptions


@dataclass(frozen=True)
class OptSummary:
    """How the fit went: start, optimum, convergence and the solver settings used.

    compile_s: the seconds of the fit call that JAX spent compiling (tracing, lowering, XLA, or loading
    from the persistent cache: `_compile.compile_clock`); 0.0 where the compiled code was reused."""

    initial: np.ndarray
    final: np.ndarray
    fmin: float
    converged: bool
    niter: int
    options: SolverOptions
    compile_s: float | None = None


@dataclass(frozen=True)
class FitState:
    """The estimates of a fit, as host arrays.

    beta, se: the estimable fixed effects and their standard errors; u: per term, the spherical
    conditional modes (levels x k); lambdas: per term, the factor of b = lambda_t u; theta_fit: theta in the fit's
    parametrisation (design.to_fit_theta) and hessian: of the objective in the solver's
    coordinates at the optimum (a bootstrap's BFGS starts from them); sigma and
    unscaled_vcov = Cov(beta-hat) / sigma^2 ((X'V^-1 X)^-1; a model without a residual scale: Cov(beta-hat))."""

    beta: np.ndarray
    se: np.ndarray
    u: tuple[np.ndarray, ...]
    lambdas: tuple[np.ndarray, ...]
    theta_fit: np.ndarray
    hessian: np.ndarray
    sigma: float | None = None
    unscaled_vcov: np.ndarray | None = None


class MixedModel:
    """Base of the model classes. Subclasses set `design`, `REML` and call `_store_fit`."""

    has_dispersion: ClassVar[bool]  # whether the model has a residual scale sigma
    supports_statistic: ClassVar[bool]  # whether its lanes extract a ReplicateFit for a bootstrap statistic
    precisions: ClassVar[tuple[str, ...]]  # the precisions its replicate fits can run in
    design: Design
    REML: bool
    optsum: OptSummary | None = None
    _state: FitState | None = None

    def _require_fit(self) -> FitState:
        if self.optsum is None:
            raise RuntimeError("the model has not been fitted yet; call .fit()")
        return self._state

    def _store_fit(self, state: FitState, optsum: OptSummary) -> None:
        """Keep a fit's estimates and summary; warn (pointing at the caller's caller) if it did not converge."""
        self._state, self.optsum = state, optsum
        if not optsum.converged:
            warn(f"the fit did not converge in {optsum.niter} iterations; see m.optsum", RuntimeWarning)

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
    def estimable(self) -> pd.Series:
        """Per coefficient name, whether it is estimable (False: a linear combination of the columns
        before it, dropped from the fit as lme4 drops it; its m.beta is -0.0)."""
        return pd.Series(self.design.estimable, index=list(self.coefnames), dtype=bool)

    @property
    def rank(self) -> int:
        return self.structure.p

    def initial_theta(self) -> np.ndarray:
        """The start in the fit's parametrisation: 1 for diagonal elements of each lambda_t, 0 below the
        diagonal (lme4's, for columns in ordinary units: see design.column_transform)."""
        return initial_theta(self.structure.terms)

    def _lambdas(self, lambdas_fit) -> tuple[np.ndarray, ...]:
        """Per term, the factor of b = lambda u for the fit's spherical u: T_t^-1 lambda_fit
        (design.column_transform), lower triangular unless the term's columns were centred."""
        return tuple(back @ np.asarray(lam) for lam, back in zip(lambdas_fit, self.design.z_back))

    def _fit_theta(self, theta: np.ndarray) -> np.ndarray:
        """theta in the fit's parametrisation: the fit's own where theta is the fitted one (exactly,
        not through the change of columns and back), else design.to_fit_theta."""
        state = self._require_fit()
        return state.theta_fit if np.array_equal(theta, self.theta) else self.design.to_fit_theta(theta)

    @property
    def thetanames(self) -> list[str]:
        """The names of theta's components, as in a bootstrap's tbl: θ1, θ2, ..."""
        return display.numbered("θ", self.structure.ntheta)

    def _checked_theta(self, theta, name: str) -> np.ndarray:
        theta = _by_name(theta, self.thetanames, name)
        if theta.shape != (self.structure.ntheta,):
            raise ValueError(f"{name} must have length {self.structure.ntheta}, got {theta.size}")
        if not np.all(np.isfinite(theta)) or np.any(theta < self.lowerbd):
            raise ValueError(f"{name} must be finite with diagonal elements >= 0, got {theta.tolist()}")
        return theta

    def simulation_parameters(self, beta=None, sigma=None, theta=None) -> tuple:
        """The parameters a bootstrap simulates from, checked: the fitted ones unless given.

        (beta, sigma, theta) for a model with a residual scale, (beta, theta) without one; beta
        has one value per coefficient (all of coefnames, or the estimable ones)."""
        if not self.has_dispersion and sigma is not None:
            raise ValueError(
                f"sigma applies to families with a dispersion parameter; {self.family_description} has none "
                f"(got sigma={sigma!r})"
            )
        est = self.design.estimable
        beta = self.beta.to_numpy() if beta is None else beta
        if isinstance(beta, (dict, pd.Series)):
            names = list(self.coefnames) if len(beta) == len(est) else [n for n, e in zip(self.coefnames, est) if e]
            beta = _by_name(beta, names, "beta")
        beta = np.asarray(beta, dtype=np.float64).reshape(-1)
        if beta.shape[0] not in (len(est), int(est.sum())) or not np.all(np.isfinite(beta)):
            raise ValueError(
                f"beta must hold {len(est)} finite values (one per coefficient: {', '.join(self.coefnames)}), "
                f"got {beta.tolist()}"
            )
        beta = beta[est] if beta.shape[0] == len(est) else beta
        theta = self.theta if theta is None else self._checked_theta(theta, "theta")
        if not self.has_dispersion:
            return beta, theta
        sigma = self.sigma if sigma is None else sigma
        if isinstance(sigma, (dict, pd.Series)):
            sigma = float(_by_name(sigma, ["σ"], "sigma")[0])
        if isinstance(sigma, bool) or not (
            isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma) and sigma > 0
        ):
            raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
        return beta, float(sigma), theta

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
        return self._by_coef(self._require_fit().beta, -0.0)

    fixef = beta

    @property
    def stderror(self) -> pd.Series:
        """Standard errors of the fixed effects; NaN for inestimable coefficients."""
        return self._by_coef(self._require_fit().se, np.nan)

    @property
    def vcov(self) -> pd.DataFrame:
        """Cov(beta-hat) by coefficient name (NaN rows and columns for inestimable ones): sigma^2
        (X'V^-1 X)^-1 for an LMM, lme4's vcov for a GLMM."""
        names, est = list(self.coefnames), self.design.estimable
        full = np.full((len(names), len(names)), np.nan)
        full[np.ix_(est, est)] = self._beta_vcov()
        return pd.DataFrame(full, index=names, columns=names)

    def coeftable(self, ddf: str | None = None) -> pd.DataFrame:
        """Estimate, standard error, Wald z and two-sided p-value per fixed-effects coefficient; with
        ddf="satterthwaite" or "kenward-roger" (a linear mixed model), lmerTest's t tests: Estimate,
        Std. Error, df, t value, Pr(>|t|) (jaxmm/ddf.py)."""
        if ddf is not None:
            from . import ddf as ddf_tests

            return ddf_tests.coeftable(self, ddf)
        beta, se = self.beta, self.stderror
        z = beta / se
        return pd.DataFrame({"Est.": beta, "SE": se, "z": z, "p": 2.0 * sps.norm.sf(np.abs(z))})

    def _beta_vcov(self) -> np.ndarray:
        """Cov(beta-hat) of the estimable coefficients: s^2 unscaled_vcov, s = sigma or 1."""
        state = self._require_fit()
        return (state.sigma**2 if self.has_dispersion else 1.0) * state.unscaled_vcov

    def emmeans(self, specs, by=None, at=None, ddf: str | None = "kenward-roger", type: str = "link"):
        """Estimated marginal means over the reference grid, as R's emmeans (jaxmm/emmeans.py): `.table`
        and `.contrast("pairwise" | "trt.vs.ctrl" | matrix, adjust=...)`."""
        from .emmeans import EMMeans

        return EMMeans(self, specs, by=by, at=at, ddf=ddf, type=type)

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

    @property
    def dof(self) -> int:
        """Number of parameters: fixed effects (estimable), theta, and sigma if the model has one."""
        return self.rank + self.structure.ntheta + int(self.has_dispersion)

    def issingular(self, atol: float = 0.0) -> bool:
        """True when some bounded component of theta is at (within atol of) its lower bound."""
        return bool(np.any(self.theta - self.lowerbd <= atol))

    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's as.data.frame(VarCorr(m)): grp, var1, var2, vcov, sdcor.

        Per term, each column's variance and standard deviation, then each pair's covariance and
        correlation (for correlated terms), of b ~ N(0, s^2 Lambda Lambda'), s = sigma or 1;
        then, for a model with a residual scale, the residual."""
        state = self._require_fit()
        scale = state.sigma if self.has_dispersion else 1.0
        rows = []
        for term, cov in zip(
            self.structure.terms, covariances(self.theta[None], np.array([scale]), self.structure.terms)
        ):
            sd, rho = sd_corr(cov)
            rows += [(term.group, c, None, cov[0, i, i], sd[0, i]) for i, c in enumerate(term.columns)]
            if term.correlated:
                rows += [
                    (term.group, term.columns[i], term.columns[j], cov[0, i, j], r[0]) for (i, j), r in rho.items()
                ]
        if self.has_dispersion:
            rows.append(("Residual", None, None, scale**2, scale))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def ranef(self, condvar: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects b = Lambda u, per grouping factor (levels x columns).

        condvar=True: each table's attrs["condvar"] holds its levels' (levels, k, k) conditional
        covariances of b (lme4's ranef(condVar = TRUE) postVar; see predict.conditional_covariances)."""
        state = self._require_fit()
        tables = {
            term.group: pd.DataFrame(u @ lam.T, index=pd.Index(levels, name=term.group), columns=list(term.columns))
            for term, u, lam, levels in zip(self.structure.terms, state.u, state.lambdas, self.design.levels)
        }
        if condvar:
            from .predict import conditional_covariances

            for table, cov in zip(tables.values(), conditional_covariances(self)):
                table.attrs["condvar"] = cov
        return tables

    # ---- after the fit: jaxmm/predict.py, jaxmm/profile.py ------------------------------------
    def predict(
        self, newdata=None, *, re_form=None, allow_new_levels: bool = False, type: str = "response", offset=None
    ):
        """lme4's predict.merMod: X beta + o + Z b (re_form=None) or X beta + o (re_form '~0', 'NA', False)
        on newdata (default the fitted rows), o the offset; see jaxmm.predict.predict."""
        from .predict import predict

        return predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels, type=type, offset=offset)

    def simulate(
        self, nsim: int = 1, seed=None, *, use_u: bool = False, newdata=None, weights=None, offset=None
    ) -> pd.DataFrame:
        """lme4's simulate.merMod: nsim responses (columns sim_1, ...); see jaxmm.predict.simulate."""
        from .predict import simulate

        return simulate(self, nsim, seed, use_u=use_u, newdata=newdata, weights=weights, offset=offset)

    def refit(self, y) -> MixedModel:
        """lme4's refit: the same model fitted to the response y, as a new model."""
        from .predict import refit

        return refit(self, y)

    def confint(self, level: float = 0.95, method: str = "wald", *, nsim: int = 500, seed=None) -> pd.DataFrame:
        """lme4's confint.merMod: method 'wald', 'profile' or 'boot' (nsim replicates from seed); a
        table of type, group, names, lower, upper as a bootstrap's shortestcovint. See jaxmm.profile.confint."""
        from .profiling import confint

        return confint(self, level, method, nsim=nsim, seed=seed)

    def _linear_predictor(self) -> np.ndarray:
        """X beta-hat + o + Z b-hat, o the offset (Z b = Z_fit b_fit, b_fit = T_t b: design.column_transform)."""
        mats, beta = self.design.matrices, self._require_fit().beta
        eta = self.design.x @ beta + self.design.offset
        ranef = self.ranef()
        for term, refs, z, transform in zip(self.structure.terms, mats.refs, mats.z, self.design.z_transforms):
            b_fit = ranef[term.group].to_numpy() @ transform.T
            eta = eta + np.sum(np.asarray(z) * b_fit[np.asarray(refs)], axis=1)
        return eta

    @property
    def family_settings(self) -> dict:
        """What, beyond formula, data and REML, tells two fits of this kind apart (a saved bootstrap's
        signature, jaxmm/io.py): none for a linear mixed model."""
        return {}

    # ---- display ------------------------------------------------------------------------

    def summary(self) -> str:
        """A MixedModels.jl-style summary: criteria, variance components, fixed effects."""
        self._require_fit()
        return display.model_summary(self)

    def __repr__(self) -> str:
        if self.optsum is None:
            return f"{type(self).__name__}({self.formula!r}, not fitted)"
        return self.summary()

    def _repr_html_(self) -> str:
        """The summary as HTML tables, for notebooks."""
        if self.optsum is None:
            return f"<p>{html.escape(repr(self))}</p>"
        return display.model_html(self)


def _by_name(values, names: list[str], what: str) -> np.ndarray:
    """values as a float array in the order of `names`: matched by name when a dict or pandas Series
    (every name exactly once, no other), else taken as positional."""
    if not isinstance(values, (dict, pd.Series)):
        return np.asarray(values, dtype=np.float64).reshape(-1)
    given = list(values.keys())
    unknown = [k for k in given if k not in names]
    if unknown:
        raise ValueError(f"{what} has no component named {unknown[0]!r}; its names are {', '.join(names)}")
    missing = [n for n in names if n not in given]
    if missing or len(given) != len(set(given)):
        raise ValueError(
            f"{what} given by name must name each of {', '.join(names)} once"
            + (f"; {missing[0]!r} is missing" if missing else "")
        )
    try:
        return np.array([float(values[n]) for n in names])
    except (TypeError, ValueError):
        raise ValueError(f"{what} must hold numbers, got {dict(values)!r}") from None
