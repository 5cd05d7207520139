"""The parametric bootstrap: simulate many responses from a fitted model and refit them all at once.

MixedModels.jl's `parametricbootstrap`, done as batched JAX computation: per batch of replicate
indices, one `jit(vmap(...))` simulates each response from its own key and refits it. A linear
mixed model's lane reduces the response to its sufficient statistics (Z'y, X'y, y'y), the blocks
Z'Z, Z'X, X'X being shared by all lanes; a generalized one's refits the Laplace objective by
BFGS from the fitted model's Hessian (first derivatives only: see `_GlmmLanes`). What differs
between the two is a lane's simulate and fit (`_LmmLanes`, `_GlmmLanes`); the batching is
shared. A vmapped while-loop runs until its slowest lane finishes, so each call is capped at
`ROUND_MAXITER` iterations and lanes are refilled as their replicates finish (see `_run`).

Scale-out: a batch is a sequence of kernel calls of a fixed number of lanes, and the calls take
the local devices in turn; JAX dispatches them asynchronously, so the devices run side by side.
Every device runs the same one-device program. (A program partitioned over N devices with
shard_map is optimised differently by XLA -- on a CPU its results differ from one device's in the
last bits -- so it is not used: a replicate's numbers must not depend on the device count.) When
JAX runs as several processes (`jax.distributed.initialize()`), each process fits a contiguous
share of the replicates and the shares are gathered (`process_allgather`), so every process
returns the whole table. Replicate i's random numbers depend on (rng, i) alone, and its fitted
numbers are bit-identical for any nsamp, batch_size, number of devices or of processes.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.experimental import multihost_utils

from ._compile import jit
from .design import ModelMatrices, Structure, suffstats
from .deviance import factorize, lambdas, modes_by_term, solve_pls
from .family import Family
from .linalg import UNROLL_MAX
from .glmm import GeneralizedLinearMixedModel, GlmmData, Mode, fisher_vcov, fit_glmm, glmm_data
from .model import FitResult, LinearMixedModel, MixedModel, fit_response, floor_eigenvalues, objective_hessian, solver_options
from .results import MixedModelBootstrap, Replicates
from .simulate import replicate_key, simulate_glmm_response, simulate_response
from .solver import SolverOptions

ROUND_MAXITER = 8
_CPU_MEMORY_BUDGET = 2 * 1024**3  # bytes a batch may use on a CPU, roughly
# On a CPU, lanes whose working set stays within about this many bytes run fastest (measured on
# sleepstudy, 10,000 replicates: 128 lanes 0.63 s, 1024 lanes 1.67 s; dyestuff: flat from 256 up).
_CPU_CACHE_BUDGET = 2 * 1024**2


def _memory_budget() -> int:
    """Bytes a batch may use: 2 GiB on a CPU, a quarter of an accelerator's memory."""
    if jax.default_backend() == "cpu":
        return _CPU_MEMORY_BUDGET
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("bytes_limit", 4 * _CPU_MEMORY_BUDGET) // 4)


class ReplicateFit(NamedTuple):
    """What a `statistic` is given for each replicate: its fit, in the model's parametrisation.

    beta: the estimable fixed effects (p,); theta; sigma; b: per random-effects term, in the
    order of m.structure.terms, the conditional modes on the original scale, an (m_t, k_t) array
    laid out as m.ranef()[term.group]; fitted: X beta + Z b (n,)."""

    beta: Array
    theta: Array
    sigma: Array
    b: tuple[Array, ...]
    fitted: Array


class _Simulation(NamedTuple):
    """The linear mixed model responses are simulated from: its matrices and (beta, sigma, theta),
    and the random effects to hold fixed (use_u=True) or None (drawn afresh)."""

    mats: ModelMatrices
    beta: Array
    sigma: Array
    theta: Array
    ranef: tuple[Array, ...] | None


class _Refit(NamedTuple):
    """A linear mixed model every simulated response is fitted to: its matrices (float64), blocks
    (in the precision the fits run in) and criterion, and the fixed effects `centre` (the model's
    own fitted ones) that responses are centred by: the fit is of y - X centre, and centre is
    added back to its beta. The profiled deviance is the same, but its sums of squares are then
    of the size of the residuals, not of y, so float32 does not lose them to cancellation."""

    mats: ModelMatrices
    blocks: Any
    reml: Array
    centre: Array


class _GlmmSimulation(NamedTuple):
    """The generalized linear mixed model responses are simulated from: its data (the response
    unused) and (beta, theta), and the spherical random effects to hold fixed (use_u=True) or
    None (drawn afresh)."""

    data: GlmmData
    beta: Array
    theta: Array
    u: Array | None


class _GlmmRefit(NamedTuple):
    """A generalized linear mixed model every simulated response is fitted to: its data (the
    response replaced by each replicate's) and the fixed effects PIRLS starts from (fast=True)."""

    data: GlmmData
    beta: Array


class _Lanes(NamedTuple):
    """Per lane, where one model's fit of the lane's replicate stands: its start (or where it
    stopped) in the solver's coordinates x, BFGS Hessian and the iterations it may still take."""

    x: Array
    hessian: Array
    budget: Array


def _vectorisable(calls_lapack: bool) -> bool:
    """Whether lanes may run side by side (vmap) rather than one after another (lax.map): unless
    their program calls LAPACK on a CPU (accelerators do not use LAPACK). jaxlib 0.10's batched
    LAPACK kernels split a large batch into pieces on XLA's CPU thread pool and block their thread
    until the pieces are done; two such calls at once can hold every thread of the pool, and
    nothing runs the pieces. Seen on 2 cores: pastes' bootstrap on 4 CPU devices (3 runs of 3),
    verbagg's on one. One lane at a time, each call factors one matrix, which is never split."""
    return not calls_lapack or jax.default_backend() != "cpu"


@dataclass(frozen=True)
class _LmmLanes:
    """What a lane does with a linear mixed model of shape `structure`: simulate y from it, fit
    it to y from the lane's start. Static (compared by value): one compilation per shape."""

    structure: Structure

    @property
    def vectorised(self) -> bool:
        """See `_vectorisable`: the dense part (Zr, X, y) is factored by LAPACK beyond the size
        jaxmm.linalg unrolls."""
        s = self.structure
        return _vectorisable(s.qrest + s.p + 1 > UNROLL_MAX)

    def simulate(self, key: Array, sim: _Simulation) -> Array:
        return simulate_response(key, sim.mats, self.structure, sim.beta, sim.sigma, sim.theta, sim.ranef)

    def _stats(self, y: Array, refit: _Refit, dtype) -> Any:
        """The sufficient statistics of y - X centre (see _Refit), formed in float64, in `dtype`."""
        return _as_floats(suffstats(refit.mats, self.structure, y - refit.mats.x @ refit.centre), dtype)

    def fit(self, y: Array, refit: _Refit, lane: _Lanes, opts: SolverOptions) -> FitResult:
        stats = self._stats(y, refit, lane.x.dtype)
        fit = fit_response(stats, lane.x, refit.blocks, self.structure, refit.reml, opts, lane.hessian, lane.budget)
        return fit._replace(beta=fit.beta + refit.centre)

    def replicate_fit(self, y: Array, refit: _Refit, fit: FitResult) -> ReplicateFit:
        """The conditional modes b_t = lambda_t u_t and fitted values at the fit's theta."""
        structure = self.structure
        stats = self._stats(y, refit, fit.theta.dtype)
        factor = factorize(fit.theta, refit.blocks, stats, structure)
        sol = solve_pls(factor, fit.theta, refit.blocks, stats, structure)
        us = modes_by_term(jnp.concatenate([sol.u1.reshape(-1), sol.ur]), structure)
        b = tuple(u @ lam.T for u, lam in zip(us, lambdas(fit.theta, structure)))
        beta = sol.beta + refit.centre
        fitted = refit.mats.x @ beta + sum(jnp.sum(z * bt[refs], axis=1) for bt, refs, z in zip(b, refit.mats.refs, refit.mats.z))
        return ReplicateFit(beta, fit.theta, fit.sigma, b, fitted)

    def stopped_at(self, res: FitResult) -> np.ndarray:
        """Where each lane's fit stopped, in the solver's coordinates: theta."""
        return res.theta


@dataclass(frozen=True)
class _GlmmLanes:
    """What a lane does with a generalized linear mixed model: simulate y from it, fit it to y.

    The fit runs BFGS from the lane's Hessian (the fitted model's, to start with), so the kernel
    differentiates the Laplace objective, and PIRLS inside it, once (a Newton fit's second
    derivatives through PIRLS are what makes a GLMM fit's compilation long). x = theta (fast) or
    (theta, beta). The FitResult's se is from `fisher_vcov` at the replicate's optimum, lme4's
    vcov(use.hessian = FALSE): for fast=False the exact Hessian that m.stderror uses is not at
    hand, and BFGS's approximation of it is off by up to ~10% (cbpp); sigma is NaN (no dispersion)."""

    structure: Structure
    family: Family
    fast: bool
    nAGQ: int

    @property
    def vectorised(self) -> bool:
        """See `_vectorisable`: PIRLS factors its dense system with LAPACK, whatever its size."""
        return _vectorisable(True)

    def simulate(self, key: Array, sim: _GlmmSimulation) -> Array:
        return simulate_glmm_response(key, sim.data, self.structure, self.family, sim.beta, sim.theta, sim.u)

    def fit(self, y: Array, refit: _GlmmRefit, lane: _Lanes, opts: SolverOptions) -> FitResult:
        ntheta = self.structure.ntheta
        theta0, beta0 = (lane.x, refit.beta) if self.fast else (lane.x[:ntheta], lane.x[ntheta:])
        data = refit.data._replace(y=y)
        res = fit_glmm(theta0, beta0, data, self.structure, self.family, self.fast, opts, self.nAGQ, lane.hessian, lane.budget)
        se = jnp.sqrt(jnp.diagonal(fisher_vcov(res.theta, Mode(res.u, res.beta), data, self.structure, self.family)))
        return FitResult(res.objective, res.theta, res.beta, se, jnp.full((), jnp.nan, y.dtype), res.converged, res.niter, res.hessian)

    def stopped_at(self, res: FitResult) -> np.ndarray:
        """Where each lane's fit stopped, in the solver's coordinates: theta, or (theta, beta)."""
        return res.theta if self.fast else np.concatenate([res.theta, res.beta], axis=1)


@partial(jit, static_argnames=("structure", "simulator", "fitters", "opts", "statistic"))
def _fit_replicates(
    key: Array,
    indices: Array,
    lanes: tuple[_Lanes, ...],
    sim: _Simulation | _GlmmSimulation,
    refits: tuple[Any, ...],
    structure: Structure,
    simulator: _LmmLanes | _GlmmLanes,
    fitters: tuple[_LmmLanes | _GlmmLanes, ...],
    opts: SolverOptions,
    statistic: Callable | None,
) -> tuple[tuple[FitResult, ...], Array | None]:
    """Simulate replicates `indices` from `sim` (by `simulator`) and fit each to every model of
    `refits` (by `fitters`), each fit from its lane's start and BFGS Hessian for at most its
    lane's budget of iterations; with `statistic`, also statistic(ReplicateFit) of the first
    model's fit. Runs on the device its arguments are on. `structure`, the simulating model's,
    chooses the compiler options (see _compile.jit)."""

    def one(i, lane):
        y = simulator.simulate(replicate_key(key, i), sim)
        fits = tuple(f.fit(y, r, ln, opts) for f, r, ln in zip(fitters, refits, lane))
        if statistic is None:
            return fits, None
        return fits, statistic(fitters[0].replicate_fit(y, refits[0], fits[0]))

    if all(f.vectorised for f in (simulator, *fitters)):
        return jax.vmap(one)(indices, lanes)
    return lax.map(lambda lane: one(*lane), (indices, lanes))


_PRECISIONS = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}


def _precision(precision: str) -> np.dtype:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return _PRECISIONS[precision]


def _as_floats(tree, dtype: np.dtype):
    """The tree with its floating-point arrays in `dtype` (integer arrays, the indices, kept)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_key(rng) -> Array:
    if _is_count(rng):
        return jax.random.key(int(rng))
    if isinstance(rng, jax.Array) and (jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) or rng.shape == (2,)):
        return rng
    raise ValueError(f"rng must be an int seed or a JAX PRNG key, got {rng!r}")


def _local_devices(devices) -> list:
    """The devices to spread the lanes over: all local ones (default), the first n, or a list."""
    local = jax.local_devices()
    if devices is None:
        return local
    if _is_count(devices):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices must be between 1 and {len(local)} (the local devices), got {devices}")
        return local[:devices]
    chosen = list(devices) if isinstance(devices, (list, tuple)) else None
    if not chosen or any(d not in local for d in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"devices must be a count or a list of distinct local devices (jax.local_devices()), got {devices!r}")
    if len({d.platform for d in chosen}) > 1:
        raise ValueError("devices must all be of one kind (all CPUs or all GPUs)")
    return chosen


def _lane_bytes(m: MixedModel) -> int:
    """A lane's working set, roughly. A linear mixed model's: the response, the first term's
    diagonal blocks and the dense rest. A generalized one's: PIRLS's dense (q + p)^2 system, its
    factor and the copies the gradient keeps, and the n x K rows of Z Lambda with their per-row
    K x K products and the 11 step-halving trials' eta (q random effects, K = the terms' columns)."""
    s = m.structure
    if isinstance(m, GeneralizedLinearMixedModel):
        q, k = sum(t.nranef for t in s.terms), sum(t.k for t in s.terms)
        return 8 * (8 * (q + s.p) ** 2 + 4 * s.n * (k * k + k + 11))
    t1 = s.terms[0]
    d = s.qrest + s.p + 1
    npairs = len(m.design.blocks.pair_level)
    return 8 * (4 * s.n + 16 * t1.nlevels * t1.k**2 + 16 * d * d + 8 * npairs * t1.k**2)


def lane_width(m: MixedModel, platform: str) -> int:
    """How many lanes a device fits at a time by default: a power of two, fixed per model and kind
    of device, never by nsamp (see `parametricbootstrap` on bit-identical results). On a CPU, as
    many lanes as fit in about 2 MiB (cache-sized working sets run fastest), at least 16; on an
    accelerator, which needs wide batches, up to 16384 within a quarter of its memory."""
    lane_bytes = _lane_bytes(m)
    most = min(1024, max(16, _CPU_CACHE_BUDGET // lane_bytes)) if platform == "cpu" else 16384
    cap = max(1, min(most, _memory_budget() // lane_bytes))
    return 1 << (cap.bit_length() - 1)


def _process_share(nsamp: int, index: int, count: int) -> range:
    """The replicates process `index` of `count` fits: a contiguous share."""
    return range(index * nsamp // count, (index + 1) * nsamp // count)


def _simulation_parameters(m: MixedModel, beta, sigma, theta) -> tuple:
    """The (beta, sigma, theta) to simulate from, (beta, theta) for a generalized linear mixed
    model: the fitted ones unless given, checked."""
    if isinstance(m, GeneralizedLinearMixedModel) and sigma is not None:
        raise ValueError(f"sigma applies to families with a dispersion parameter; family {m.family.name!r} has none (got sigma={sigma!r})")
    est = m.design.estimable
    if beta is None:
        beta = m.beta.to_numpy()
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    if beta.shape[0] not in (len(est), int(est.sum())) or not np.all(np.isfinite(beta)):
        raise ValueError(f"beta must hold {len(est)} finite values (one per coefficient: {', '.join(m.coefnames)}), got {beta.tolist()}")
    beta = beta[est] if beta.shape[0] == len(est) else beta
    theta = m.theta if theta is None else m._checked_theta(theta, "theta")
    if isinstance(m, GeneralizedLinearMixedModel):
        return beta, theta
    sigma = m.sigma if sigma is None else sigma
    if isinstance(sigma, bool) or not (isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
    return beta, float(sigma), theta


def parametricbootstrap(
    rng,
    nsamp: int,
    m: MixedModel,
    ftype=np.float64,
    *,
    beta=None,
    sigma=None,
    theta=None,
    use_u: bool = False,
    statistic: Callable | None = None,
    progress: bool = True,
    optsum_overrides: dict[str, Any] | None = None,
    batch_size: int | None = None,
    devices=None,
    precision: str = "float64",
) -> MixedModelBootstrap:
    """Simulate `nsamp` responses y = X beta + sigma (Z Lambda(theta) u + e) from `m` and refit each.

    A generalized linear mixed model (jaxmm.fit(..., family=...)): y is drawn from its family with
    mean mu = g^-1(X beta + Z Lambda(theta) u), u ~ N(0, I) (binomial: the successes out of the
    weights' trials, as a proportion), and refitted as m was (m.fast); it has no sigma, so
    `sigma` may not be given and `samp.tbl` has no σ column. Its replicates start from m's
    (theta, beta) with BFGS from m's Hessian; se(beta) is lme4's vcov(use.hessian = FALSE) (see
    `_GlmmLanes`). `statistic` applies to linear mixed models only.

    rng: an int seed or a JAX key; replicate i draws from fold_in(key, i) alone.
    ftype: storage precision of the results (of MixedModels.jl; not the fits' precision).
    precision: the precision a linear mixed model's replicate fits run in, "float64" (the default)
    or "float32" (for speed on accelerators whose float32 is much faster; responses are still
    simulated in float64). float32 fits stop at what it resolves (solver.default_options):
    measured on 10,000 sleepstudy replicates, 93 fits (1 %) end more than 1e-6 relative above the
    float64 optimum, 3 more than 1e-4, and about two thirds of the fits float64 puts on the
    boundary stay just off it (dyestuff: a fifth); bench/README.md has the table.
    use_u: hold the random effects at m's conditional modes b-hat (m.ranef()) and draw only the
    residuals, y = X beta + Z b-hat + sigma e (a GLMM: y drawn given mu = g^-1(X beta + Z b-hat)):
    lme4's bootMer(use.u = TRUE), a bootstrap conditional on the observed groups (theta is then
    not used to simulate, so it cannot be given).
    statistic: a jit-able function of a `ReplicateFit` (beta, theta, sigma, b, fitted of each
    replicate's fit) returning an array, as lme4's bootMer(FUN = ...); its values are
    `samp.statistic`, shape (nsamp, ...), with intervals from `samp.statistic_confint()`. It is
    traced once per function object: define it once and reuse it. For predictions at new data,
    close over a design matrix built like m's (its columns the estimable coefficients, in
    m.coefnames order): `f = lambda r: X_new @ r.beta`.
    optsum_overrides: solver settings for the replicate fits (ftol_rel, ftol_abs, xtol_abs, maxiter).
    batch_size: lanes in flight over all devices, rounded up to a multiple of lane_width(m) times
    the number of devices (the default: one call of lane_width(m) lanes per device); they are
    fitted lane_width(m) at a time, by the same compiled program.
    devices: the local devices to spread the lanes over: all (default), a count, or a list from
    jax.local_devices(). Under jax.distributed, each process fits its share on its own devices
    and every process returns the whole table.

    Reproducibility: replicate i's numbers are bit-identical whatever nsamp, batch_size, the
    replicate's lane, the number of devices or the run's split into processes. Each device
    compiles the kernel once (on a CPU shown as N devices: N compilations; the persistent cache
    keeps them for later sessions).
    """
    _check_fitted("m", m, (LinearMixedModel, GeneralizedLinearMixedModel))
    try:
        dtype = np.dtype(ftype)
    except TypeError:
        dtype = None
    if dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"ftype must be np.float16, np.float32 or np.float64, got {ftype!r}")
    if not isinstance(use_u, (bool, np.bool_)):
        raise ValueError(f"use_u must be True or False, got {use_u!r}")
    if use_u and theta is not None:
        raise ValueError("theta cannot be given with use_u=True: the random effects are held at m's conditional modes")
    if statistic is not None and not callable(statistic):
        raise ValueError(f"statistic must be a function of a ReplicateFit, got {statistic!r}")
    if statistic is not None and isinstance(m, GeneralizedLinearMixedModel):
        raise ValueError("statistic applies to linear mixed models; for a generalized one (family "
                         f"{m.family.name!r}) use the replicates' beta and theta (samp.tbl)")
    if isinstance(m, GeneralizedLinearMixedModel) and precision != "float64":
        raise ValueError(f"precision {precision!r} applies to linear mixed models; a generalized one (family {m.family.name!r}) is refitted in float64")
    sim = _simulation_parameters(m, beta, sigma, theta)
    (res,), stat = simulate_and_refit(
        rng, nsamp, m, sim, (m,), use_u=bool(use_u), statistic=statistic, optsum_overrides=optsum_overrides,
        batch_size=batch_size, devices=devices, progress=progress, precision=precision,
    )
    failed = int((~res.converged).sum())
    if failed:
        warnings.warn(f"{failed} of {nsamp} bootstrap replicates did not converge; see samp.converged", RuntimeWarning, stacklevel=2)
    return MixedModelBootstrap(m, res.astype(dtype), sim=sim, statistic=stat)


def _check_fitted(name: str, m, kinds: tuple[type, ...] = (LinearMixedModel,)) -> None:
    if not isinstance(m, kinds) or m.optsum is None:
        raise ValueError(f"{name} must be a fitted {' or '.join(k.__name__ for k in kinds)} (jaxmm.fit(...))")


def simulate_and_refit(
    rng,
    nsamp: int,
    sim_model: MixedModel,
    sim: tuple,
    models: tuple[MixedModel, ...],
    *,
    use_u: bool = False,
    statistic: Callable | None = None,
    optsum_overrides: dict[str, Any] | None = None,
    batch_size: int | None = None,
    devices=None,
    progress: bool = True,
    precision: str = "float64",
    first: int = 0,
) -> tuple[list[Replicates], np.ndarray | None]:
    """Simulate `nsamp` responses from `sim_model` at sim = (beta, sigma, theta) (a GLMM: (beta,
    theta)) and fit every model of `models` (fitted to the same data rows) to each: one
    Replicates per model, and the statistic's values (of the first model's fits) or None. The engine of `parametricbootstrap`
    (models = (m,)) and `jaxmm.pblrt` (models = (small, large)); see parametricbootstrap for
    the arguments.

    Each model's fits start from its own fitted theta and Hessian, the simulating model's from the
    generating theta. `first`: the replicates are first..first+nsamp-1 (a later part of a run:
    replicate i is the same whatever part it is fitted in)."""
    if not _is_count(nsamp) or nsamp < 1:
        raise ValueError(f"nsamp must be a positive integer, got {nsamp!r}")
    if batch_size is not None and (not _is_count(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    nsamp = int(nsamp)
    dtype = _precision(precision)
    opts = solver_options(optsum_overrides, dtype)
    chosen = _local_devices(devices)
    share = _process_share(nsamp, jax.process_index(), jax.process_count())
    share = range(first + share.start, first + share.stop)
    call_lanes = min(lane_width(mm, chosen[0].platform) for mm in models)
    step = call_lanes * len(chosen)  # one call per device
    batch = step * -(-int(batch_size or step) // step)
    with jax.enable_x64(True):
        key = _as_key(rng)
        simulator, simulation = _simulation(sim_model, sim, use_u)
        targets = [_target(mm, sim if mm is sim_model else None, dtype) for mm in models]
        parts, stat = _run(key, share, simulation, simulator, targets, opts, (batch, call_lanes), chosen,
                           progress and jax.process_index() == 0, statistic)
        if jax.process_count() > 1:
            parts = [Replicates(**_gather(vars(part), nsamp)) for part in parts]
            if stat is not None:
                stat = _gather({"statistic": stat}, nsamp)["statistic"]
    return parts, stat


def _simulation(m: MixedModel, sim: tuple, use_u: bool) -> tuple[_LmmLanes | _GlmmLanes, _Simulation | _GlmmSimulation]:
    """How a lane simulates from m at `sim` (see simulate_and_refit), and m's data for it."""
    if isinstance(m, GeneralizedLinearMixedModel):
        beta, theta = sim
        u = jnp.concatenate([jnp.asarray(u_t).reshape(-1) for u_t in m._fit["u"]]) if use_u else None
        data = jax.tree.map(jnp.asarray, glmm_data(m.design))
        return _GlmmLanes(m.structure, m.family, m.fast, m.nAGQ), _GlmmSimulation(data, jnp.asarray(beta), jnp.asarray(theta), u)
    beta, sigma, theta = sim
    ranef = tuple(jnp.asarray(m.ranef()[t.group].to_numpy()) for t in m.structure.terms) if use_u else None
    mats = jax.tree.map(jnp.asarray, m.design.matrices)
    return _LmmLanes(m.structure), _Simulation(mats, jnp.asarray(beta), jnp.asarray(sigma), jnp.asarray(theta), ranef)


class _Target(NamedTuple):
    """A model every simulated response is fitted to: the model, what a lane does with it, its
    data for the lanes, and its fits' start and positive-definite BFGS start Hessian."""

    model: MixedModel
    fitter: _LmmLanes | _GlmmLanes
    refit: _Refit | _GlmmRefit
    start: np.ndarray
    h0: np.ndarray


def _target(m: MixedModel, sim: tuple | None, dtype: np.dtype) -> _Target:
    """m as a target of the replicate fits, which start near the simulating parameters `sim`
    when m is the simulating model, else near m's own fit, and run in `dtype` (float64 for a
    generalized linear mixed model).

    A diagonal element of theta at exactly 0 is a stationary point of the objective (by
    symmetry), so starts are kept off the boundary. A linear mixed model's start Hessian is exact
    there; a generalized one's is m's own (its exact Hessian at the start would mean
    differentiating PIRLS twice: a long compilation), a good start for BFGS near m's fit."""
    if isinstance(m, GeneralizedLinearMixedModel):
        beta, theta = sim or (m._fit["beta"], m.theta)
        theta = np.where(m.lowerbd == 0.0, np.maximum(theta, 0.1), theta)
        start = theta if m.fast else np.concatenate([theta, beta])
        refit = _GlmmRefit(jax.tree.map(jnp.asarray, glmm_data(m.design)), jnp.asarray(beta))
        return _Target(m, _GlmmLanes(m.structure, m.family, m.fast, m.nAGQ), refit, start, floor_eigenvalues(m._fit["hessian"]))
    theta = m.theta if sim is None else sim[2]
    start = np.where(m.lowerbd == 0.0, np.maximum(theta, 0.1), theta)
    blocks = jax.tree.map(jnp.asarray, m.design.blocks)
    centre = jnp.asarray(m._fit["beta"])
    refit = _Refit(jax.tree.map(jnp.asarray, m.design.matrices), _as_floats(blocks, dtype), jnp.asarray(m.REML), centre)
    if np.array_equal(start, m.theta):  # the fit's own final Hessian: nothing more to compile
        h0 = floor_eigenvalues(m._fit["hessian"])
    else:
        stats = suffstats(m.design.matrices, m.structure, jnp.asarray(m.design.y))
        h0 = floor_eigenvalues(objective_hessian(jnp.asarray(start), blocks, stats, structure=m.structure, reml=jnp.asarray(m.REML)))
    return _Target(m, _LmmLanes(m.structure), refit, start.astype(dtype), h0.astype(dtype))


def _gather(part: dict[str, np.ndarray], nsamp: int) -> dict[str, np.ndarray]:
    """Every process's share of each array (one row per replicate), in replicate order, on every process."""
    longest = -(-nsamp // jax.process_count())
    padded = {name: np.resize(a, (longest, *a.shape[1:])) for name, a in part.items()}
    gathered = multihost_utils.process_allgather(padded)
    sizes = [len(_process_share(nsamp, i, jax.process_count())) for i in range(jax.process_count())]
    return {name: np.concatenate([a[i, :n] for i, n in enumerate(sizes)]) for name, a in gathered.items()}


def _run(
    key,
    share: range,
    sim: _Simulation | _GlmmSimulation,
    simulator: _LmmLanes | _GlmmLanes,
    targets: list[_Target],
    opts: SolverOptions,
    lanes_shape: tuple[int, int],
    devices: list,
    progress: bool,
    statistic: Callable | None,
) -> tuple[list[Replicates], np.ndarray | None]:
    """Fit replicates `share`, simulated by `simulator` from `sim`, to every target through one
    compiled batch shape, refilling the lanes as replicates finish.

    The `batch` lanes, lanes_shape = (batch, call_lanes), go through the kernel `call_lanes` at a
    time, the calls taking the devices in turn (JAX runs them side by side): every call runs the
    same one-device program, so a replicate's numbers depend neither on the batch size nor on the
    number of devices. Each call runs at most `ROUND_MAXITER` solver iterations per fit. A fit that
    converged (or used up `opts.maxiter`) is stored and closed; one that needs more iterations
    continues, from where it stopped (x and the BFGS Hessian), in the next call. A lane whose
    replicate has no open fit left is refilled with the next replicate. So no batch waits for its
    slowest lane, and every call has the same shape: one compilation per device. Closed fits and
    idle lanes get a budget of one iteration, their results unused."""
    batch, call_lanes = lanes_shape
    shared = [jax.device_put((key, sim, tuple(t.refit for t in targets)), d) for d in devices]
    fitters = tuple(t.fitter for t in targets)
    round_opts = opts._replace(maxiter=min(opts.maxiter, ROUND_MAXITER))
    outs = [Replicates.empty(len(share), t.model) for t in targets]
    stat_out = None
    lane_index = np.full(batch, -1)  # replicate (position in the share) in each lane; -1 for an idle lane
    lane_x = [np.tile(t.start, (batch, 1)) for t in targets]
    lane_hess = [np.tile(t.h0, (batch, 1, 1)) for t in targets]
    lane_used = [np.zeros(batch, dtype=np.int64) for _ in targets]  # iterations spent in earlier calls
    lane_open = [np.zeros(batch, dtype=bool) for _ in targets]  # the lane's fit to this model still runs
    upcoming = 0
    show = progress and sys.stderr.isatty()
    from tqdm import tqdm

    def call(part: slice, device: int):
        """The kernel on lanes `part`, dispatched asynchronously to devices[device]."""
        key, sim, refits = shared[device]

        def lanes(a: np.ndarray) -> Array:
            return jax.device_put(a[part], devices[device])

        return _fit_replicates(
            key, lanes(share.start + np.maximum(lane_index, 0)),
            tuple(_Lanes(lanes(x), lanes(hess), lanes(np.where(open_, opts.maxiter - used, 1)))
                  for x, hess, used, open_ in zip(lane_x, lane_hess, lane_used, lane_open)),
            sim, refits, structure=simulator.structure, simulator=simulator, fitters=fitters, opts=round_opts, statistic=statistic,
        )

    with tqdm(total=len(share), disable=not show, unit="rep", desc="bootstrap") as bar:
        while True:
            idle = np.flatnonzero(lane_index < 0)
            fresh = idle[: max(0, min(len(idle), len(share) - upcoming))]
            lane_index[fresh] = np.arange(upcoming, upcoming + len(fresh))
            for t, x, hess, used, open_ in zip(targets, lane_x, lane_hess, lane_used, lane_open):
                x[fresh], hess[fresh], used[fresh], open_[fresh] = t.start, t.h0, 0, True
            upcoming += len(fresh)
            busy = lane_index >= 0
            if not busy.any():
                break
            parts = range(0, batch, call_lanes)
            results = jax.device_get([call(slice(c, c + call_lanes), j % len(devices)) for j, c in enumerate(parts)])
            fits, stat = jax.tree.map(lambda *parts: np.concatenate(parts), *results)
            for j, (t, res, out) in enumerate(zip(targets, fits, outs)):
                used = lane_used[j] + res.niter
                finished = lane_open[j] & (res.converged | (used >= opts.maxiter) | ~np.isfinite(res.objective))
                done = np.flatnonzero(finished)
                out.store(lane_index[done], jax.tree.map(lambda a: a[done], res), t.model, extra_iterations=lane_used[j][done])
                if statistic is not None and j == 0:
                    if stat_out is None:
                        stat_out = np.full((len(share), *stat.shape[1:]), np.nan, dtype=np.result_type(stat.dtype, np.float64))
                    stat_out[lane_index[done]] = stat[done]
                lane_open[j] &= ~finished
                going = lane_open[j]
                lane_x[j][going], lane_hess[j][going], lane_used[j][going] = t.fitter.stopped_at(res)[going], res.hessian[going], used[going]
            complete = busy & ~np.any(lane_open, axis=0)
            bar.update(int(complete.sum()))
            lane_index[complete] = -1
    return outs, stat_out
