"""The user-facing `GeneralizedLinearMixedModel`, and what a bootstrap lane does with it (the lane
protocol of jaxmm/lanes.py): simulate a response from the family, refit the Laplace (or adaptive
Gauss-Hermite) objective of laplace.py by BFGS from the fitted model's Hessian."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array, lax

from .. import solver
from .._compile import compile_clock, computing
from ..covariance import lambdas, transform_theta
from ..design import Design, Structure, as_data_frame, build_design, expression_values, modes_by_term
from ..formula import MixedFormula, binomial_pair, column_name, parse_formula
from ..lanes import FitResult, ReplicateFit, Target, vectorisable
from ..linalg import uses_lapack
from ..mixedmodel import FitState, MixedModel, OptSummary
from ..solver import SolverOptions, SolverState, floor_eigenvalues, solver_options
from .family import Family
from .family import family as make_family
from .laplace import (
    GlmmData,
    Laplace,
    Mode,
    Pattern,
    _fit_glmm,
    blocked_pattern,
    fisher_vcov,
    glmm_data,
    glmm_result,
    linear_predictor,
    objective_of,
    require_scalar_term,
    solver_problem,
    z_lambda,
)

_COUNTS = ("successes", "failures")


def simulate_glmm_response(
    key: Array,
    data: GlmmData,
    structure: Structure,
    fam: Family,
    beta: Array,
    theta: Array,
    u: Array | None = None,
) -> Array:
    """y drawn from `fam` with mean mu = g^-1(eta), eta = X beta + Z Lambda(theta) u, u ~ N(0, I_q)
    (see Family.sample; binomial: the trials are data.weights; the family's shape: data.shape). Pure:
    vmap over keys.

    Given `u` (the fitted model's spherical conditional modes, at its theta: lme4's use.u=TRUE), the
    random effects are held there instead. u and y draw from two halves of the key, so replicate
    i's y given eta uses the same random numbers either way."""
    key_u, key_y = jax.random.split(key)
    if u is None:
        u = jax.random.normal(key_u, (sum(t.nranef for t in structure.terms),), dtype=beta.dtype)
    eta = linear_predictor(Mode(u, beta), z_lambda(theta, data, structure), data)
    return fam.sample(key_y, fam.inverse_link(eta), data.weights, data.shape)


class GlmmSimulation(NamedTuple):
    """The generalized linear mixed model responses are simulated from: its data (the response
    unused) and (beta, theta), and the spherical random effects to hold fixed (use_u=True) or
    None (drawn afresh)."""

    data: GlmmData
    beta: Array
    theta: Array
    u: Array | None


class GlmmRefit(NamedTuple):
    """A generalized linear mixed model every simulated response is fitted to: its data (the
    response replaced by each replicate's), the fixed effects PIRLS starts from (fast=True), of the
    standardised X_s = X A^-1, back = A^-1, which returns beta to X's terms, and z_back (T_t^-1 per
    term), which returns theta to Z's (design.column_transform)."""

    data: GlmmData
    beta: Array
    back: Array
    z_back: tuple[Array, ...]


@dataclass(frozen=True)
class GlmmLanes:
    """What a lane does with a generalized linear mixed model: simulate y from it, fit it to y.

    The fit runs BFGS from the lane's Hessian (the fitted model's, to start with), so the kernel
    differentiates the Laplace objective, and PIRLS inside it, once (a Newton fit's second
    derivatives through PIRLS are what makes a GLMM fit's compilation long). x = theta (fast) or
    (theta, beta). The FitResult's se is from `fisher_vcov` at the replicate's optimum, lme4's
    vcov(use.hessian = FALSE): for fast=False the exact Hessian that m.stderror uses is not at
    hand, and BFGS's approximation of it is off by up to ~10% (cbpp); sigma is the family's shape as
    Family.sigma reports it (NaN without one), refitted per replicate."""

    structure: Structure
    family: Family
    fast: bool
    nAGQ: int
    nested: int  # the length of the nested chain after term 1 (laplace.Pattern.parents)

    @property
    def vectorised(self) -> bool:
        """On a CPU, never: PIRLS runs while loops inside every evaluation of the objective
        (lanes.vectorisable). Both ways forced in one run per model on a 2-core CPU, best of 2-3 warm
        bootstraps, ms per replicate (load 3-5; n rows, q random effects, d the dense rest of PIRLS's
        Schur complement with beta, which LAPACK factors beyond jaxmm.linalg's loop sizes):

            model                                n     q    d   side by side  one at a time
            cbpp, binomial                      56    15    4           1.58           1.18
            cbpp, fast=True                     56    15    4           1.31           1.38
            cbpp, nAGQ = 9                      56    15    4           2.11           2.03
            cbpp, one Bernoulli row per animal 842    15    4           11.6           9.11
            grouseticks, Poisson, 3 terms      403   584    4           86.4           40.5
            grouseticks, fast=True             403   584    4           71.4           40.0
            grouseticks, (1|brood)             403   118    4           1.85           1.82
            penicillin's diameter, Poisson     144    30    7           5.25           5.14
            verbagg, Bernoulli, 2 crossed     7584   340   30            361            202

        One at a time is faster or level everywhere: no size (n, q, d) makes side by side win. It
        loses most where a lane's PIRLS iteration forms dense blocks (grouseticks: 181 x 181 over brood
        and location, 0.26 MB a lane) or runs over many rows (verbagg)."""
        return vectorisable(self.calls_lapack, inner_loops=True)

    @property
    def calls_lapack(self) -> bool:
        """The dense rest of PIRLS's Schur complement (laplace.System.schur: the terms after the nested chain,
        and beta) is factored by LAPACK beyond the sizes jaxmm.linalg loops over."""
        chained = sum(t.nranef for t in self.structure.terms[1 : 1 + self.nested])
        return uses_lapack(self.structure.qrest - chained + self.structure.p)

    def simulate(self, key: Array, sim: GlmmSimulation) -> Array:
        return simulate_glmm_response(key, sim.data, self.structure, self.family, sim.beta, sim.theta, sim.u)

    def response(self, y: Array) -> Array:
        return y  # drawn whole: PIRLS reads every value at each iteration

    def fit(
        self, y: Array, refit: GlmmRefit, state: SolverState, opts: SolverOptions, until: Array
    ) -> tuple[FitResult, SolverState]:
        data = refit.data._replace(y=y)
        problem = (refit.beta, data, self.structure, self.family, self.fast)
        evaluate, column_diag = solver_problem(*problem, self.nAGQ)
        state = solver.run(objective_of(evaluate), state, column_diag, opts, exact=False, until=until)
        res, state, f, mode = solver.finish_evaluated(evaluate, state, column_diag, opts)

        def result() -> FitResult:
            g = glmm_result(res, Laplace(f, mode), *problem)
            vcov = fisher_vcov(g.theta, Mode(g.u, g.beta), data._replace(shape=g.shape), self.structure, self.family)
            se = jnp.sqrt(jnp.diagonal(refit.back @ vcov @ refit.back.T))
            sigma = self.family.sigma(g.shape).astype(y.dtype)
            beta, theta = refit.back @ g.beta, transform_theta(g.theta, refit.z_back, self.structure.terms)
            return FitResult(g.objective, theta, beta, se, sigma, g.converged, g.niter, g.hessian)

        def nothing() -> FitResult:
            return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(result))

        # The result (the Fisher system at the optimum; finish_evaluated evaluated the Laplace objective there)
        # only for a fit that is done: one that continues in the next round reports nothing (lanes.py); zeros
        # stand in
        return lax.cond(state.done, result, nothing), state

    def replicate_fit(self, y: Array, refit: GlmmRefit, fit: FitResult) -> ReplicateFit:
        raise NotImplementedError("a statistic of a generalized linear mixed model's replicates")


class GeneralizedLinearMixedModel(MixedModel):
    """A generalized linear mixed model: g(E[y | b]) = X beta + Z b, b ~ N(0, Lambda Lambda'),
    fitted by maximum likelihood with the Laplace approximation (lme4's nAGQ = 1) or, for a single
    scalar random-effects term, adaptive Gauss-Hermite quadrature (`fit(nAGQ=k)`, lme4's nAGQ = k).

    `weights`: prior weights, a column name or an array with one value per row of `data`; for
    family="binomial" the number of trials, with the response the proportion of successes
    (lme4's `glmer(incidence/size ~ ..., weights = size)`). Use `jaxmm.fit(..., family=...)`.

    family="negativebinomial" ("nbinom2") and "gamma" have a shape alpha (Family.has_shape),
    estimated with theta and beta by the same Laplace objective: `m.shape` (k, lme4's
    getME(m, "glmer.nb.theta"); the Gamma's 1/phi) and `m.sigma` (k; the Gamma's sqrt(phi)).
    """

    has_dispersion: ClassVar[bool] = False
    supports_statistic: ClassVar[bool] = False
    precisions: ClassVar[tuple[str, ...]] = ("float64",)
    REML: ClassVar[bool] = False

    def __init__(
        self, formula: str, data: pd.DataFrame, family: str, *, link: str | None = None, weights=None, offset=None
    ):
        self.family: Family = make_family(family, link)
        data = as_data_frame(data)
        if weights is not None and not self.family.takes_weights:
            raise ValueError(
                f"weights are the binomial trials; {self.family_description} takes none (got weights={weights!r})"
            )
        mf = formula if isinstance(formula, MixedFormula) else parse_formula(formula)
        pair = binomial_pair(mf.response)
        if pair is not None:  # cbind(successes, failures): the proportion, with the trials as weights
            if weights is not None:
                raise ValueError(
                    f"weights with the response {mf.response!r}: its trials are successes + failures; give one only"
                )
            counts = [
                expression_values(f"{what} of {mf.response!r}", f"I({e})", data) for what, e in zip(_COUNTS, pair)
            ]
            proportion, trials = self.family.proportion_and_trials(*counts, mf.response)
            data = data.assign(**{mf.response: proportion, "(weights)": trials})
            mf, weights = replace(mf, response=f"`{mf.response}`", variables=(*mf.variables, mf.response)), "(weights)"
        column = column_name(mf.response)
        if column in data.columns:
            data = data.assign(**{column: self.family.encode_response(data[column], column)})
        self.design: Design = build_design(mf, data, residual=False, weights=weights, offset=offset)
        self.family.check_response(self.design.y, self.design.weights, self.design.response)
        self.fast = False
        self.nAGQ = 1
        self._shape = 1.0
        self.optsum: OptSummary | None = None

    def fit(
        self, *, fast: bool = False, nAGQ: int = 1, optsum_overrides: dict[str, Any] | None = None
    ) -> GeneralizedLinearMixedModel:
        """Minimise the Laplace objective (nAGQ = 1) or the adaptive Gauss-Hermite one with nAGQ
        nodes over (theta, beta), or theta alone with fast=True; returns self.

        nAGQ: 1 to 100 (lme4's range); lme4's nAGQ = 0 is fast=True here.

        The start, as lme4's and MixedModels.jl's: theta = 1 on the diagonal, 0 below it, and beta
        the fit of the GLM without random effects (PIRLS at theta = 0)."""
        if not isinstance(fast, (bool, np.bool_)):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        # bool is an int subclass: True would pass for 1
        if isinstance(nAGQ, (bool, np.bool_)) or not isinstance(nAGQ, (int, np.integer)) or not 1 <= nAGQ <= 100:
            raise ValueError(f"nAGQ must be an integer from 1 to 100 (lme4's nAGQ = 0 is fast=True), got {nAGQ!r}")
        if nAGQ > 1:
            require_scalar_term(self.structure)  # before compiling, which would raise it too
        opts = solver_options(optsum_overrides)
        structure = self.structure
        theta0 = self.initial_theta()
        with computing(), compile_clock() as compile_s:
            # host arrays: the compiled calls take them as they are (jnp.asarray would compile a program each)
            data = glmm_data(self.design, self._pattern)
            res = _fit_glmm(
                theta0,
                None,  # the GLM's beta (laplace.glm_start)
                data,
                structure=structure,
                fam=self.family,
                fast=bool(fast),
                opts=opts,
                nAGQ=int(nAGQ),
            )
            beta, vcov = self.design.from_fit_beta(np.asarray(res.beta), np.asarray(res.vcov))
            state = FitState(
                beta=beta,
                se=np.sqrt(np.diagonal(vcov)),
                unscaled_vcov=vcov,
                u=modes_by_term(np.asarray(res.u), structure),
                lambdas=self._lambdas(lambdas(np.asarray(res.theta), structure.terms)),
                theta_fit=np.asarray(res.theta),
                hessian=np.asarray(res.hessian),
            )
            optsum = OptSummary(
                self.design.from_fit_theta(theta0),
                self.design.from_fit_theta(np.asarray(res.theta)),
                float(res.objective),
                bool(res.converged),
                int(res.niter),
                opts,
                compile_s(),
            )
        self.fast, self.nAGQ, self._shape = bool(fast), int(nAGQ), float(res.shape)
        self._store_fit(state, optsum)
        return self

    @property
    def shape(self) -> float:
        """The family's shape alpha at the optimum: the negative binomial's k (variance mu + mu^2/k),
        the Gamma's 1/phi (variance phi mu^2)."""
        self._require_fit()
        if not self.family.has_shape:
            raise ValueError(f"{self.family_description} has no shape parameter")
        return self._shape

    @property
    def sigma(self) -> float:
        """glmmTMB's sigma(m): the negative binomial's k, the Gamma's sqrt(phi) (lme4's sigma(m))."""
        with computing():
            return float(self.family.sigma(jnp.asarray(self.shape)))

    @property
    def dof(self) -> int:
        """Number of parameters: fixed effects (estimable), theta, and the family's shape if it has one."""
        return super().dof + int(self.family.has_shape)

    def fitted(self) -> np.ndarray:
        """mu = g^-1(X beta-hat + Z b-hat), the conditional means."""
        with computing():
            return np.asarray(self.family.inverse_link(jnp.asarray(self._linear_predictor())))

    @property
    def family_settings(self) -> dict:
        return {"family": f"{self.family.name} ({self.family.link})", "fast": self.fast}

    # ---- display ------------------------------------------------------------------------
    @property
    def family_description(self) -> str:
        return f"family {self.family.name!r}"

    @property
    def fit_method(self) -> str:
        if self.nAGQ == 1:
            approximation = "Laplace approximation"
        else:
            approximation = f"Adaptive Gauss-Hermite quadrature, nAGQ = {self.nAGQ}"
        fast = ", fast: beta from PIRLS" if self.fast else ""
        return f"Generalized linear mixed model fit by maximum likelihood ({approximation}{fast})"

    @property
    def distribution(self) -> str:
        shape = ""
        if self.family.has_shape and self.optsum is not None:
            nb = self.family.name == "negativebinomial"
            shape = f" (k = {self.shape:.5g})" if nb else f" (dispersion phi = {1 / self.shape:.5g})"
        return f"Distribution: {self.family.name}{shape}; link: {self.family.link}"

    @functools.cached_property
    def _pattern(self) -> Pattern:
        """Where PIRLS sums the rows' products (laplace.blocked_pattern): fixed by the grouping factors,
        so computed once per model (a refit of another response shares it)."""
        return blocked_pattern(self.design.matrices.refs, self.structure.terms)

    # ---- the lane protocol (jaxmm/lanes.py) ------------------------------------------------
    def lanes(self) -> GlmmLanes:
        return GlmmLanes(self.structure, self.family, self.fast, self.nAGQ, len(self._pattern.parents))

    def lane_bytes(self) -> int:
        """A lane's working set, roughly: PIRLS's dense Schur complement over [ur, beta], its factor and
        the copies the gradient keeps, the entries and pairs of its fill (laplace.Pattern), and the
        n x K rows of Z Lambda with their per-row K x K products and the 11 step-halving trials' eta
        (K = the terms' columns)."""
        s = self.structure
        k, pattern = sum(t.k for t in s.terms), self._pattern
        fill = len(pattern.entry_level) + len(pattern.pair_a)
        return 8 * (8 * (s.qrest + s.p) ** 2 + 4 * s.n * (k * k + k + 11) + 4 * s.terms[0].k * fill)

    def simulation(self, params: tuple, use_u: bool) -> GlmmSimulation:
        """The arrays `GlmmLanes.simulate` draws from, at params = (beta, theta) and the fitted shape;
        with use_u, the spherical random effects held at the conditional modes."""
        beta, theta = params
        u = np.concatenate([np.asarray(u_t).reshape(-1) for u_t in self._require_fit().u]) if use_u else None
        data = glmm_data(self.design, self._pattern)._replace(shape=self._shape)
        beta_s, theta_s = self.design.to_fit_beta(beta), self._fit_theta(theta)
        # device_put as jnp.asarray would (a Python scalar weakly typed), without a program compiled per array
        return jax.device_put(GlmmSimulation(data, beta_s, theta_s, u))

    def refit_target(self, params: tuple | None, dtype: np.dtype) -> Target:
        """The model as a target of replicate fits (always in float64), started at params = (beta,
        theta) (the simulating model) or at its own fit, theta kept off the boundary (a stationary
        point by symmetry). The BFGS start Hessian is m's own: its exact Hessian at the start would
        mean differentiating PIRLS twice, a long compilation."""
        state = self._require_fit()
        beta, theta = params or (state.beta, self.theta)
        theta = state.theta_fit if params is None else self._fit_theta(theta)
        beta = self.design.to_fit_beta(beta)
        theta = np.where(self.lowerbd == 0.0, np.maximum(theta, 0.1), theta)
        log_shape = [np.log(self._shape)] if self.family.has_shape else []
        start = np.concatenate([theta, log_shape, *([] if self.fast else [beta])])
        data = glmm_data(self.design, self._pattern)
        refit = jax.device_put(GlmmRefit(data, beta, self.design.beta_back, tuple(self.design.z_back)))  # simulation
        column_diag = solver_problem(refit.beta, refit.data, self.structure, self.family, self.fast, self.nAGQ)[1]
        start_state = solver.init(start, column_diag, floor_eigenvalues(state.hessian))  # NumPy
        return Target(self, self.lanes(), refit, start_state)
