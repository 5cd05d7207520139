"""Linear mixed models: the user-facing `LinearMixedModel`, its pure fitting function, and what a
bootstrap lane does with it (the lane protocol of jaxmm/lanes.py).

    y = X beta + Z b + e,   b ~ N(0, sigma^2 Lambda Lambda'),   e ~ N(0, sigma^2 I)

The fit minimises the profiled deviance (ML) or REML criterion of jaxmm/deviance.py over theta;
then

    sigma-hat^2 = pwrss / n (ML) or pwrss / (n - p) (REML),
    se(beta-hat) = sigma-hat sqrt(diag((L_X L_X')^-1)).

Units and offsets. The fit runs on X_s = X A^-1 (standardised columns, design.standardise) and on
the response y_s = (y - X_s b0) / s (b0 its least-squares coefficients, s their residual scale), so
that a column in the millions or a response of 1e8 +- 1 is as well conditioned as the examples. The
estimates transform back exactly: beta = A^-1 (s beta_s + b0), sigma = s sigma_s, b = s b_s, theta
is unchanged, and the criterion shifts by a constant,

    ML:   d(theta) = d_s(theta) + 2 n log s
    REML: d(theta) = d_s(theta) + 2 (n - p) log s + 2 log|det A|

(log|X'V^-1 X| = log|X_s'V^-1 X_s| + 2 log|det A|), which is lme4's criterion for X as given.

Offsets and prior weights (lmer's offset and weights): y = X beta + o + Z b + e, e_i ~ N(0, sigma^2 / w_i).
The offset is subtracted from y before the standardisation; the weights enter the blocks and sufficient
statistics (X'WX, Z'Wy, ...: design.ModelMatrices), which makes the fit that of W^1/2 (y - o), and the
criterion gains -sum log w_i, as lme4's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax import Array, lax

from . import solver
from ._compile import compile_clock, computing, is_small, jit
from .covariance import lambdas, transform_theta
from .design import (
    Blocks,
    Design,
    ModelMatrices,
    Structure,
    SuffStats,
    as_data_frame,
    build_design,
    fixed_predictor,
    modes_by_term,
    suffstats,
)
from .deviance import factorize, fixed_effects, objective, solve_pls
from .lanes import FitResult, ReplicateFit, Target, vectorisable
from .linalg import uses_lapack
from .mixedmodel import FitState, MixedModel, OptSummary
from .solver import SolverOptions, SolverResult, SolverState, floor_eigenvalues, minimize, solver_options


def _fit_result(
    res: SolverResult,
    blocks: Blocks,
    stats: SuffStats,
    structure: Structure,
    reml: Array | bool,
    centre: Array,
    back: Array,
    shift: Array,
) -> FitResult:
    """beta-hat, se and sigma-hat at the solver's optimum (see the module docstring), for X = X_s A:
    beta = back (beta_s + centre) and its se with back = A^-1, the criterion plus `shift`."""
    fixed = fixed_effects(factorize(res.theta, blocks, stats, structure), structure)
    dof = structure.n - jnp.asarray(reml, res.theta.dtype) * structure.p
    sigma = jnp.sqrt(fixed.pwrss / dof)
    se = sigma * jnp.sqrt(jnp.diagonal(back @ fixed.vcov @ back.T))
    beta = back @ (fixed.beta + centre)
    return FitResult(res.fmin + shift, res.theta, beta, se, sigma, res.converged, res.niter, res.hessian)


def fit_lmm(
    stats: SuffStats,
    theta0: Array,
    blocks: Blocks,
    structure: Structure,
    reml: Array | bool,
    opts: SolverOptions,
    h0: Array | None = None,
) -> FitResult:
    """Fit the model to the response summarised by `stats`, from `theta0`, in the blocks'
    parametrisation (beta of X_s, the criterion unshifted). Pure: jit and vmap it.

    h0: an approximate Hessian at theta0 for gradient-only (BFGS) iterations; None for Newton."""
    fun = partial(objective, blocks=blocks, stats=stats, structure=structure, reml=reml)
    res = minimize(fun, theta0, structure.column_diag, opts, h0)
    eye, zero = jnp.eye(structure.p, dtype=theta0.dtype), jnp.zeros((), theta0.dtype)
    return _fit_result(res, blocks, stats, structure, reml, jnp.zeros(structure.p, theta0.dtype), eye, zero)


@partial(jit, static_argnames=("structure",))
def _fit_suffstats(mats: ModelMatrices, x_t: Array, y: Array, structure: Structure) -> SuffStats:
    """suffstats(mats, structure, y) as one compiled call (not one dispatch per operation), given X' laid
    out as (p, n), `x_t`: compiled with the rest, the transpose of an (n, p) X would be fused into X'Wy,
    whose sums would then round otherwise than suffstats' (eager, the bootstrap's, the profiles')."""
    return suffstats(mats._replace(x=x_t.T), structure, y)


@partial(jit, static_argnames=("structure", "opts"), once=True)
def _fit_model(
    mats: ModelMatrices,
    x_t: Array,
    y: Array,
    theta0: Array,
    blocks: Blocks,
    structure: Structure,
    reml: Array,
    opts: SolverOptions,
    h0: Array | None,
):
    """LinearMixedModel.fit's computation as one compiled call (one dispatch, one wait: a small model's
    fit takes about as long as a few of them): the sufficient statistics of y (as `_fit_suffstats`), the
    fit (`fit_lmm`), and at its theta the spherical conditional modes u, (L_X L_X')^-1 and the lambda_t."""
    stats = suffstats(mats._replace(x=x_t.T), structure, y)
    res = fit_lmm(stats, theta0, blocks, structure, reml, opts, h0)
    factor = factorize(res.theta, blocks, stats, structure)
    sol = solve_pls(factor, res.theta, blocks, stats, structure)
    return res, sol.u1, sol.ur, fixed_effects(factor, structure).vcov, lambdas(res.theta, structure.terms)


@partial(jit, static_argnames=("structure",))
def objective_hessian(theta: Array, blocks: Blocks, stats: SuffStats, structure: Structure, reml: Array) -> Array:
    return jax.hessian(objective)(theta, blocks, stats, structure, reml)


# Rows of a simulated response drawn at a time (`row_chunks`): what a bootstrap lane holds of it. Every shipped
# example (insteval: 73,421 rows) is one chunk.
CHUNK_ROWS = 2**17


def row_chunks(n: int) -> tuple[int, int]:
    """(C, R): a response of n rows is drawn in C = ceil(n / CHUNK_ROWS) chunks of R = ceil(n / C) rows,
    chunk c holding rows cR .. min((c + 1) R, n) - 1."""
    count = -(-n // CHUNK_ROWS)
    return count, -(-n // count)


class LmmSimulation(NamedTuple):
    """The linear mixed model responses are simulated from: its matrices and (beta, sigma, theta),
    and the random effects to hold fixed (use_u=True) or None (drawn afresh)."""

    mats: ModelMatrices
    beta: Array
    sigma: Array
    theta: Array
    ranef: tuple[Array, ...] | None


@partial(jax.tree_util.register_dataclass, data_fields=("key", "sim"), meta_fields=("structure",))
@dataclass(frozen=True)
class LmmDraw:
    """A simulated response (`simulate_response`) as a bootstrap lane holds it: its key and the model of shape
    `structure` it is drawn from. Its values are drawn where they are used, a chunk of rows at a time
    (`response_stats`), so that a lane never holds more than one chunk of them."""

    key: Array
    sim: LmmSimulation
    structure: Structure


def _rows(tree, start, size: int):
    """Rows start .. start + size - 1 of every array of `tree` (model matrices: row-major, n first)."""
    return jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, size), tree)


def _first_chunk(draw: LmmDraw, rows: int) -> tuple[Array, tuple[Array, ...]]:
    """Chunk 0's e (R values) and the random effects b_t = u_t Lambda_t' of every term (or the held ones):
    [e_0; u] is one draw, normal(key, R + q)."""
    sim, structure = draw.sim, draw.structure
    q = sum(t.nranef for t in structure.terms)
    draws = jax.random.normal(draw.key, (rows + q,), dtype=sim.beta.dtype)
    if sim.ranef is not None:
        return draws[:rows], sim.ranef
    effects, offset = [], rows
    for term, lam in zip(structure.terms, lambdas(sim.theta, structure.terms)):
        effects.append(draws[offset : offset + term.nranef].reshape(term.nlevels, term.k) @ lam.T)
        offset += term.nranef
    # kept apart: fused into the gathers b_t[refs], each of the n rows would draw its level's u again
    return draws[:rows], lax.optimization_barrier(tuple(effects))


def _later_chunk(draw: LmmDraw, c: Array, rows: int) -> tuple[Array, Array, Array]:
    """Chunk c > 0 on the window of R rows from start = min(cR, n - R) (the last chunk's window is moved back to
    end at row n): start, e on the window (row cR + j takes e_c[j], e_c = normal(fold_in(key, c), R)) and
    whether each row is the chunk's (the rows before cR are the previous chunk's)."""
    n = draw.structure.n
    start = jnp.minimum(c * rows, n - rows)
    shift = c * rows - start
    e = jnp.roll(jax.random.normal(jax.random.fold_in(draw.key, c), (rows,), dtype=draw.sim.beta.dtype), shift)
    return start, e, jnp.arange(rows) >= shift


def _chunk_response(sim: LmmSimulation, mats: ModelMatrices, effects: tuple[Array, ...], e: Array) -> Array:
    """y = X beta + o + sigma W^-1/2 e + sigma Z b (b = effects) on the rows of `mats` (see simulate_response);
    held random effects (sim.ranef) are in y's units: + Z b."""
    noise = e if mats.weights is None else e / jnp.sqrt(mats.weights)
    y = fixed_predictor(mats, sim.beta) + sim.sigma * noise
    for b, refs, z in zip(effects, mats.refs, mats.z):
        part = jnp.sum(z * b[refs], axis=1)
        y = y + (part if sim.ranef is not None else sim.sigma * part)
    return y


def simulate_response(
    key: Array,
    mats: ModelMatrices,
    structure: Structure,
    beta: Array,
    sigma: Array,
    theta: Array,
    ranef: tuple[Array, ...] | None = None,
) -> Array:
    """y = X beta + o + sigma (Z Lambda(theta) u + W^-1/2 e), with [e; u] standard normal, o the offset and W
    the prior weights (see design.ModelMatrices). Pure: vmap over keys.

    The draws are taken in C chunks of R rows (`row_chunks`): chunk 0's e and u as one draw,
    [e_0; u] = normal(key, R + q), chunk c > 0's e_c = normal(fold_in(key, c), R); a response of at most
    CHUNK_ROWS rows is one chunk, [e; u] = normal(key, n + q). So the statistics of a long response can be
    formed chunk by chunk (`response_stats`) without holding it whole.

    Given `ranef` (per term, the (m_t, k_t) random effects b_t, e.g. the fitted model's
    conditional modes: lme4's use.u=TRUE), the random effects are held there instead,
    y = X beta + o + Z b + sigma W^-1/2 e, and theta is not used. The same draw is taken either way, so
    replicate i's e is the same in both."""
    draw = LmmDraw(key, LmmSimulation(mats, beta, sigma, theta, ranef), structure)
    count, rows = row_chunks(structure.n)
    e, effects = _first_chunk(draw, rows)
    first = _chunk_response(draw.sim, _rows(mats, 0, rows), effects, e)
    if count == 1:
        return first

    def chunk(c, y):
        start, e, own = _later_chunk(draw, c, rows)
        part = _chunk_response(draw.sim, _rows(mats, start, rows), effects, e)
        part = jnp.where(own, part, lax.dynamic_slice_in_dim(y, start, rows))
        return lax.dynamic_update_slice_in_dim(y, part, start, 0)

    y = jnp.zeros(structure.n, first.dtype).at[:rows].set(first)
    return lax.fori_loop(1, count, chunk, y)


def response_stats(draw: LmmDraw, mats: ModelMatrices, structure: Structure, centre: Array) -> SuffStats:
    """The sufficient statistics (design.suffstats) of r = y - X centre - o for the drawn response y
    (`simulate_response`), of the model of shape `structure` with matrices `mats` (on the rows of the
    simulation's) and offset o: the sums of the C chunks' statistics, each chunk drawn where it is summed (one
    chunk: the statistics of r itself). Pure: vmap over draws; a lane holds one chunk of y at a time."""
    count, rows = row_chunks(draw.structure.n)

    def chunk_residual(start, e, effects) -> tuple[ModelMatrices, Array]:
        own = _rows(mats, start, rows)
        y = _chunk_response(draw.sim, _rows(draw.sim.mats, start, rows), effects, e)
        return own, y - fixed_predictor(own, centre)

    e, effects = _first_chunk(draw, rows)
    own, r = chunk_residual(0, e, effects)
    stats = suffstats(own, structure, r)
    if count == 1:
        return stats

    def chunk(c, stats):
        start, e, keep = _later_chunk(draw, c, rows)
        own, r = chunk_residual(start, e, effects)
        return jax.tree.map(jnp.add, stats, suffstats(own, structure, jnp.where(keep, r, 0.0)))

    return lax.fori_loop(1, count, chunk, stats)


def _as_floats(tree, dtype: np.dtype):
    """The tree with its floating-point arrays in `dtype` (integer arrays, the indices, kept)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class LmmRefit(NamedTuple):
    """A linear mixed model every simulated response is fitted to: its matrices (float64), blocks
    (in the precision the fits run in) and criterion, and the fixed effects `centre` (the model's
    own fitted ones, of X_s) that responses are centred by: the fit is of y - X_s centre, and centre
    is added back to its beta. The profiled deviance is the same, but its sums of squares are then
    of the size of the residuals, not of y, so float32 does not lose them to cancellation.
    back = A^-1 and shift (`_criterion_shift`) return beta and the criterion to X's terms,
    z_back (T_t^-1 per term) theta to Z's and z_transforms (T_t) from them (design.column_transform)."""

    mats: ModelMatrices
    blocks: Any
    reml: Array
    centre: Array
    back: Array
    shift: Array
    z_transforms: tuple[Array, ...]
    z_back: tuple[Array, ...]


@dataclass(frozen=True)
class LmmLanes:
    """What a lane does with a linear mixed model of shape `structure`: simulate y from it, fit
    it to y from the lane's solver state (BFGS). Static (compared by value): one compilation per shape."""

    structure: Structure

    @property
    def calls_lapack(self) -> bool:
        """The dense part (Zr, X, y) is factored by LAPACK beyond the sizes jaxmm.linalg loops over."""
        s = self.structure
        return uses_lapack(s.qrest + s.p + 1)

    @property
    def vectorised(self) -> bool:
        return vectorisable(self.calls_lapack)

    def simulate(self, key: Array, sim: LmmSimulation) -> LmmDraw:
        return LmmDraw(key, sim, self.structure)

    def response(self, y: LmmDraw) -> Array:
        s = y.sim
        return simulate_response(y.key, s.mats, y.structure, s.beta, s.sigma, s.theta, s.ranef)

    def _stats(self, y: LmmDraw, refit: LmmRefit, dtype) -> SuffStats:
        """The sufficient statistics of y - X centre - o (see LmmRefit; o the offset), in float64, in `dtype`."""
        return _as_floats(response_stats(y, refit.mats, self.structure, refit.centre), dtype)

    def fit(
        self, y: LmmDraw, refit: LmmRefit, state: SolverState, opts: SolverOptions, until: Array
    ) -> tuple[FitResult, SolverState]:
        stats = self._stats(y, refit, state.theta.dtype)
        fun = partial(objective, blocks=refit.blocks, stats=stats, structure=self.structure, reml=refit.reml)
        column_diag = self.structure.column_diag
        state = solver.run(fun, state, column_diag, opts, exact=False, until=until)
        res, state = solver.finish(fun, state, column_diag, opts)
        centre, back, shift = (a.astype(state.theta.dtype) for a in (refit.centre, refit.back, refit.shift))
        fit = _fit_result(res, refit.blocks, stats, self.structure, refit.reml, centre, back, shift)
        z_back = tuple(m.astype(fit.theta.dtype) for m in refit.z_back)
        return fit._replace(theta=transform_theta(fit.theta, z_back, self.structure.terms)), state

    def replicate_fit(self, y: LmmDraw, refit: LmmRefit, fit: FitResult) -> ReplicateFit:
        """The conditional modes b_t = T_t^-1 lambda_fit u_t (of Z's columns) and fitted values at the fit's theta."""
        structure, dtype = self.structure, fit.theta.dtype
        stats = self._stats(y, refit, dtype)
        theta_fit = transform_theta(fit.theta, tuple(m.astype(dtype) for m in refit.z_transforms), structure.terms)
        factor = factorize(theta_fit, refit.blocks, stats, structure)
        sol = solve_pls(factor, theta_fit, refit.blocks, stats, structure)
        us = modes_by_term(jnp.concatenate([sol.u1.reshape(-1), sol.ur]), structure)
        b_fit = tuple(u @ lam.T for u, lam in zip(us, lambdas(theta_fit, structure.terms)))
        b = tuple(bt @ back.astype(dtype).T for bt, back in zip(b_fit, refit.z_back))
        beta_s = sol.beta + refit.centre
        mats = refit.mats
        ranef_part = sum(jnp.sum(z * bt[refs], axis=1) for bt, refs, z in zip(b_fit, mats.refs, mats.z))
        fitted = fixed_predictor(mats, beta_s) + ranef_part
        return ReplicateFit(refit.back @ beta_s, fit.theta, fit.sigma, b, fitted)


def _checked_reml(value) -> bool:
    # bool("no") is True: anything but a boolean is a mistake
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"REML must be True or False, got {value!r}")
    return bool(value)


class LinearMixedModel(MixedModel):
    """A linear mixed-effects model y = X beta + Z b + e, b ~ N(0, sigma^2 Lambda Lambda'), e ~ N(0, sigma^2 I).

    Construct, then `fit()`; or use `jaxmm.fit(formula, data)`, which does both.
    Rows with a missing value in a column the formula uses are dropped (lme4's default) with a warning;
    `ndropped` says how many.
    """

    has_dispersion: ClassVar[bool] = True
    supports_statistic: ClassVar[bool] = True
    precisions: ClassVar[tuple[str, ...]] = ("float64", "float32")
    family_description: ClassVar[str] = "the gaussian family"
    distribution: ClassVar[str | None] = None

    def __init__(self, formula: str, data: pd.DataFrame, *, REML: bool = False, weights=None, offset=None):
        self.design: Design = build_design(formula, as_data_frame(data), weights=weights, offset=offset)
        self.REML = _checked_reml(REML)
        self.optsum: OptSummary | None = None

    # ---- fitting -------------------------------------------------------------------------
    def fit(
        self, *, REML: bool | None = None, optsum_overrides: dict[str, Any] | None = None, theta0=None
    ) -> LinearMixedModel:
        """Minimise the profiled deviance (ML) or REML criterion over theta; returns self."""
        reml = self.REML if REML is None else _checked_reml(REML)
        opts = solver_options(optsum_overrides)
        start = (
            self.initial_theta() if theta0 is None else self.design.to_fit_theta(self._checked_theta(theta0, "theta0"))
        )
        self.REML = reml
        structure, design = self.structure, self.design
        b0, scale, y_s = self._response_standardisation()
        with computing(), compile_clock() as compile_s:
            blocks = design.blocks  # host arrays (as theta0, reml): the compiled calls take them as they are
            x_t = np.ascontiguousarray(design.matrices.x.T)
            theta0, reml = np.asarray(start), np.asarray(self.REML)
            h0 = None
            if not is_small(structure):
                # An exact Hessian of a large model costs as much as several gradients (it
                # differentiates dense factorisations twice): BFGS steps from the exact start Hessian.
                stats = _fit_suffstats(design.matrices, x_t, y_s, structure=structure)
                h0 = objective_hessian(theta0, blocks, stats, structure=structure, reml=reml)
                h0 = jnp.asarray(floor_eigenvalues(h0))
            res, u1, ur, vcov, lams = jax.device_get(
                _fit_model(design.matrices, x_t, y_s, theta0, blocks, structure=structure, reml=reml, opts=opts, h0=h0)
            )
            beta, unscaled_vcov = design.from_fit_beta(scale * np.asarray(res.beta) + b0, np.asarray(vcov))
            sigma = scale * float(res.sigma)
            state = FitState(
                beta=beta,
                se=sigma * np.sqrt(np.diagonal(unscaled_vcov)),
                u=modes_by_term(scale * np.concatenate([np.ravel(u1), np.asarray(ur)]), structure),
                lambdas=self._lambdas(lams),
                theta_fit=np.asarray(res.theta),
                hessian=np.asarray(res.hessian),
                sigma=sigma,
                unscaled_vcov=unscaled_vcov,
            )
            dof = structure.n - self.REML * structure.p
            optsum = OptSummary(
                initial=design.from_fit_theta(start),
                final=design.from_fit_theta(np.asarray(res.theta)),
                fmin=float(res.objective) + 2.0 * dof * np.log(scale) + self._criterion_shift(),
                converged=bool(res.converged),
                niter=int(res.niter),
                options=opts,
                compile_s=compile_s(),
            )
        self._store_fit(state, optsum)
        return self

    def _response_standardisation(self) -> tuple[np.ndarray, float, np.ndarray]:
        """b0, the least-squares coefficients of y on X_s, s, the residuals' scale, and the response
        the fit is of, y_s = (y - X_s b0) / s (see the module docstring).

        With an intercept, y's mean is taken out first, by itself: y - mean(y) is exact to the last
        bit of y, where adding it into X_s b0 would round the residuals to the precision of the mean."""
        x, y, intercept = self.design.matrices.x, self.design.y - self.design.offset, self.design.intercept
        mean = y.mean() if intercept is not None else 0.0
        b0 = np.linalg.lstsq(x, y - mean, rcond=None)[0]
        resid = (y - mean) - x @ b0
        scale = float(np.sqrt(resid @ resid / len(y)))
        if intercept is not None:
            b0[intercept] += mean
        return b0, scale, resid / scale

    def _criterion_shift(self) -> float:
        """REML's 2 log|det A| for X = X_s A (0 for ML), and -sum log w_i with prior weights w: the fit is
        of W^1/2 y, whose density is that of y times |W|^-1/2 (lme4's criterion is y's)."""
        weights = self.design.weights
        shift = 0.0 if weights is None else -float(np.sum(np.log(weights)))
        return shift + 2.0 * float(np.linalg.slogdet(self.design.beta_scaling)[1]) if self.REML else shift

    # ---- estimates ----------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        return self._require_fit().sigma

    def fitted(self) -> np.ndarray:
        """X beta-hat + Z b-hat."""
        return self._linear_predictor()

    def residuals(self) -> np.ndarray:
        return self.design.y - self.fitted()

    @property
    def fit_method(self) -> str:
        return f"Linear mixed model fit by {'REML' if self.REML else 'maximum likelihood'}"

    # ---- inference on the fixed effects (jaxmm/ddf.py) ------------------------------------
    def contest(self, L, ddf: str = "satterthwaite", joint: bool | None = None) -> pd.DataFrame:
        """Test L beta = 0 as lmerTest's contest: a t test per row of L (one row, or joint=False) or
        one F test of all rows (several, or joint=True); L's columns are the estimable coefficients
        (or a DataFrame / Series naming them)."""
        from . import ddf as ddf_tests

        return ddf_tests.contest(self, L, ddf, joint)

    def anova(self, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """lmerTest's anova: per fixed-effects term, the F test of its type III (or type I) hypothesis."""
        from . import ddf as ddf_tests

        return ddf_tests.anova(self, type, ddf)

    # ---- the lane protocol (jaxmm/lanes.py) ------------------------------------------------
    def lanes(self) -> LmmLanes:
        return LmmLanes(self.structure)

    def lane_bytes(self) -> int:
        """A lane's working set, roughly: a chunk of the response (`row_chunks`), the first term's diagonal blocks
        with their products with Z1'Zr (dense or by pairs) and the dense rest. Within 0.9-1.4x of the temporary
        buffers XLA allocates per lane of the bootstrap kernel (sleepstudy, its diagonal and quadratic variants,
        penicillin, pastes, cake, cake_crossed, dyestuff: 1.6-53 KB per lane), so that lane_width gives models of
        one working set one width (penicillin 128 lanes, as sleepstudy: 0.044 against 0.104 ms per replicate at
        32, its width when Z1'Zr's dense products were counted 16 times)."""
        s = self.structure
        t1 = s.terms[0]
        d = s.qrest + s.p + 1
        blocks = self.design.blocks
        first = t1.nlevels * t1.k * (16 * t1.k + 2 * blocks.z1zr.shape[-1]) + 8 * len(blocks.pair_level) * t1.k**2
        return 8 * (4 * row_chunks(s.n)[1] + first + 12 * d * d)

    def simulation(self, params: tuple, use_u: bool) -> LmmSimulation:
        """The arrays `LmmLanes.simulate` draws from, at params = (beta, sigma, theta); with use_u,
        the random effects held at the conditional modes."""
        beta, sigma, theta = params
        design = self.design
        ranef = None
        if use_u:  # b of matrices.z's columns: b_fit = T_t b
            ranef = tuple(b.to_numpy() @ t.T for b, t in zip(self.ranef().values(), design.z_transforms))
        beta_s, theta_s = design.to_fit_beta(beta), self._fit_theta(theta)
        # device_put as jnp.asarray would (a Python sigma weakly typed), without a program compiled per array
        return jax.device_put(LmmSimulation(design.matrices, beta_s, sigma, theta_s, ranef))

    def refit_target(self, params: tuple | None, dtype: np.dtype) -> Target:
        """The model as a target of replicate fits in `dtype`, started near theta = params[2] (the
        simulating model) or near its own fit.

        A diagonal element of theta at exactly 0 is a stationary point of the objective (by
        symmetry), so starts are kept off the boundary; the BFGS start Hessian is exact there."""
        state = self._require_fit()
        theta = state.theta_fit if params is None else self._fit_theta(params[2])
        start = np.where(self.lowerbd == 0.0, np.maximum(theta, 0.1), theta)
        design, blocks = self.design, self.design.blocks
        centre = design.to_fit_beta(state.beta)
        fields = (design.matrices, _as_floats(blocks, dtype), self.REML, centre, design.beta_back)
        refit = jax.device_put(  # see `simulation`
            LmmRefit(*fields, self._criterion_shift(), tuple(design.z_transforms), tuple(design.z_back))
        )
        if np.array_equal(start, state.theta_fit):  # the fit's own final Hessian: nothing more to compile
            h0 = floor_eigenvalues(state.hessian)
        else:
            # same criterion of theta, better conditioned
            y_c = design.y - design.offset - design.matrices.x @ centre
            stats = suffstats(design.matrices, self.structure, jnp.asarray(y_c))
            reml = jnp.asarray(self.REML)
            h0 = floor_eigenvalues(
                objective_hessian(jnp.asarray(start), blocks, stats, structure=self.structure, reml=reml)
            )
        start_state = solver.init(start.astype(dtype), self.structure.column_diag, h0.astype(dtype))  # NumPy
        return Target(self, self.lanes(), refit, start_state)
