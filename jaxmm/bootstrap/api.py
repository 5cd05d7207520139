"""The parametric bootstrap, as MixedModels.jl's `parametricbootstrap`: simulate many responses
from a fitted model and refit them all, in batches of lanes (jaxmm/bootstrap/engine.py).

This module checks the arguments and asks the models for their part of the lane protocol
(jaxmm/lanes.py); it works for any model that provides it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .._compile import computing
from .._warn import warn
from ..lanes import one_device_at_a_time
from ..mixedmodel import MixedModel
from ..replicates import Replicates
from ..results import MixedModelBootstrap
from ..solver import solver_options
from .checkpoint import Checkpoint
from .engine import gather, is_count, lane_width, local_devices, memory_budget, process_share, replicate_key, run

_PRECISIONS = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}


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
    checkpoint=None,
) -> MixedModelBootstrap:
    """Simulate `nsamp` responses y = X beta + sigma (Z Lambda(theta) u + e) from `m` and refit each.

    A generalized linear mixed model (jaxmm.fit(..., family=...)): y is drawn from its family with
    mean mu = g^-1(X beta + Z Lambda(theta) u), u ~ N(0, I) (binomial: the successes out of the
    weights' trials, as a proportion), and refitted as m was (m.fast); it has no sigma, so
    `sigma` may not be given and `samp.tbl` has no σ column. Its replicates start from m's
    (theta, beta) with BFGS from m's Hessian; se(beta) is lme4's vcov(use.hessian = FALSE) (see
    `GlmmLanes`). `statistic` applies to linear mixed models only.

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
    devices: the local devices to spread the lanes over: all (default; as many as the memory budget holds a
    call of lanes for), a count, or a list from jax.local_devices(); on a CPU, one where the model's kernel
    calls LAPACK (a dense part of more than 48 rows: jaxmm.lanes.one_device_at_a_time). On a CPU, jaxmm
    shows JAX one device per core where JAX has not started before jaxmm's first fit and the user has not
    chosen a count (jaxmm._compile.use_cpu_cores; JAX_NUM_CPU_DEVICES=1 keeps one), so the cores fit lanes
    side by side. Under jax.distributed, each process fits its share on its own devices and every process
    returns the whole table.

    checkpoint: a file path: the finished replicates are written to it as they finish (every few
    seconds, and when the run ends or is interrupted); the same call again resumes from it and
    gives a result bit-identical to an uninterrupted run. A file of another run (model, seed,
    nsamp, parameters or settings) is refused. One process only.

    Reproducibility: replicate i's numbers are bit-identical whatever nsamp, batch_size, the
    replicate's lane, the number of devices or the run's split into processes. The kernel is
    compiled once, and each device loads it (the persistent cache keeps it for later sessions).
    """
    check_fitted("m", m)
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
    if statistic is not None and not m.supports_statistic:
        raise ValueError(
            f"statistic applies to linear mixed models; for this model ({m.family_description}) use the "
            "replicates' beta and theta (samp.tbl)"
        )
    if precision not in m.precisions:
        raise ValueError(
            f"precision {precision!r} applies to linear mixed models; this model ({m.family_description}) is "
            f"refitted in {' or '.join(m.precisions)}"
        )
    sim = m.simulation_parameters(beta, sigma, theta)
    with computing():
        key = _as_key(rng)
        key_id = tuple(int(k) for k in np.ravel(jax.random.key_data(key) if _is_typed_key(key) else key))
    settings = dict(
        use_u=bool(use_u),
        statistic=statistic,
        optsum_overrides=optsum_overrides,
        batch_size=batch_size,
        devices=devices,
        progress=progress,
        precision=precision,
    )
    if checkpoint is None:
        (res,), stat = simulate_and_refit(rng, nsamp, m, sim, (m,), **settings)
    else:
        res, stat = _checkpointed(checkpoint, rng, nsamp, m, sim, key_id, settings)
    failed = int((~res.converged).sum())
    if failed:
        warn(
            f"{failed} of {nsamp} bootstrap replicates did not converge; see samp.converged",
            RuntimeWarning,
        )
    provenance = ((key_id, 0, int(nsamp)),)
    return MixedModelBootstrap(m, res.astype(dtype), sim=sim, statistic=stat, provenance=provenance)


def _checkpointed(path, rng, nsamp, m, sim, key_id, settings) -> tuple[Replicates, np.ndarray | None]:
    """simulate_and_refit of the replicates the checkpoint at `path` does not hold yet, recording
    them there as they finish; the whole run's replicates and statistic."""
    if jax.process_count() > 1:
        raise ValueError("checkpoint applies to a bootstrap in one process")
    if not is_count(nsamp) or nsamp < 1:
        raise ValueError(f"nsamp must be a positive integer, got {nsamp!r}")
    statistic = settings["statistic"]
    run = {
        "key": list(key_id),
        "nsamp": int(nsamp),
        "sim": [np.asarray(s).tolist() for s in sim],
        "use_u": settings["use_u"],
        "precision": settings["precision"],
        "optsum_overrides": dict(settings["optsum_overrides"] or {}),
        "statistic": None if statistic is None else getattr(statistic, "__qualname__", repr(statistic)),
    }
    ckpt = Checkpoint.open(path, m, run)
    todo = np.flatnonzero(~ckpt.done)
    try:
        if len(todo):
            simulate_and_refit(
                rng,
                nsamp,
                m,
                sim,
                (m,),
                replicates=todo,
                finished=lambda numbers, parts, stat: ckpt.record(numbers, parts[0], stat),
                **settings,
            )
    finally:
        ckpt.write()
    return ckpt.replicates, ckpt.statistic


def check_fitted(name: str, m, kind: type = MixedModel) -> None:
    """A ValueError unless m is a fitted model of `kind`."""
    if not isinstance(m, kind) or m.optsum is None:
        what = "LinearMixedModel or GeneralizedLinearMixedModel" if kind is MixedModel else kind.__name__
        raise ValueError(f"{name} must be a fitted {what} (jaxmm.fit(...))")


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
    replicates: np.ndarray | None = None,
    finished: Callable[[np.ndarray, list[Replicates], np.ndarray | None], None] | None = None,
) -> tuple[list[Replicates], np.ndarray | None]:
    """Simulate `nsamp` responses from `sim_model` at `sim` (its `simulation_parameters`) and fit
    every model of `models` (fitted to the same data rows) to each: one Replicates per model, and
    the statistic's values (of the first model's fits) or None. The engine of `parametricbootstrap`
    (models = (m,)) and `jaxmm.pblrt` (models = (small, large)); see parametricbootstrap for the
    arguments.

    Each model's fits start from its own fitted theta and Hessian, the simulating model's from the
    generating theta. `first`: the replicates are first..first+nsamp-1 (a later part of a run:
    replicate i is the same whatever part it is fitted in). `replicates`: only these of them
    (sorted replicate numbers; one process), the rows of the results in that order. `finished`:
    called as replicates finish, with their numbers, their rows of each model's Replicates and of
    the statistic."""
    if not is_count(nsamp) or nsamp < 1:
        raise ValueError(f"nsamp must be a positive integer, got {nsamp!r}")
    if batch_size is not None and (not is_count(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    nsamp = int(nsamp)
    dtype = _precision(precision)
    opts = solver_options(optsum_overrides, dtype)
    chosen = local_devices(devices)
    share = process_share(nsamp, jax.process_index(), jax.process_count())
    numbers = np.arange(first + share.start, first + share.stop) if replicates is None else np.asarray(replicates)

    def report(rows: np.ndarray, outs: list[Replicates], stat: np.ndarray | None) -> None:
        finished(numbers[rows], [out.take(rows) for out in outs], None if stat is None else stat[rows])

    call_lanes = min(lane_width(mm, chosen[0].platform) for mm in models)
    if one_device_at_a_time((sim_model.lanes(), *(mm.lanes() for mm in models)), chosen[0].platform):
        chosen = chosen[:1]
    elif devices is None:  # by default, as many devices as the memory budget holds a call of (lane_width's)
        per_call = call_lanes * max(mm.lane_bytes() for mm in models)
        chosen = chosen[: max(1, memory_budget() // per_call)]
    step = call_lanes * len(chosen)  # one call per device
    batch = step * -(-int(batch_size or step) // step)
    with computing():
        key = _as_key(rng)
        simulation = sim_model.simulation(sim, use_u)
        targets = [mm.refit_target(sim if mm is sim_model else None, dtype) for mm in models]
        show = progress and jax.process_index() == 0
        parts, stat = run(
            key,
            numbers,
            sim_model.lanes(),
            simulation,
            targets,
            opts,
            (batch, call_lanes),
            chosen,
            show,
            statistic,
            None if finished is None else report,
            lazy=devices is None,
        )
        if jax.process_count() > 1:
            parts = [Replicates(**gather(vars(part), nsamp)) for part in parts]
            if stat is not None:
                stat = gather({"statistic": stat}, nsamp)["statistic"]
    return parts, stat


def simulated_responses(m: MixedModel, seed: int, nsamp: int, first: int = 0) -> np.ndarray:
    """The responses (nsamp x n) that replicates first..first+nsamp-1 of parametricbootstrap(seed, ., m)
    simulate from m's fitted parameters: to refit them by other means."""
    with computing():
        simulation, lanes = m.simulation(m.simulation_parameters(), use_u=False), m.lanes()
        key = jax.random.key(seed)
        one = lambda i: lanes.response(lanes.simulate(replicate_key(key, i), simulation))
        return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(first, first + nsamp)))


def _precision(precision: str) -> np.dtype:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return _PRECISIONS[precision]


def _is_typed_key(key) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def seed_key(seed: int) -> Array:
    """jax.random.key(seed) for a 64-bit seed. With JAX's default generator, threefry, the key is the seed's
    64 bits, high word first, and is made here in NumPy: jax.random.key compiles a program for it, a good part
    of a fresh process's short bootstrap (tests check the two agree)."""
    if jax.config.jax_default_prng_impl != "threefry2x32":
        return jax.random.key(seed)
    bits = int(np.array(seed, dtype=np.int64).view(np.uint64))
    return jax.random.wrap_key_data(np.array([bits >> 32, bits & 0xFFFFFFFF], dtype=np.uint32))


def _as_key(rng) -> Array:
    if is_count(rng):
        if not -(2**63) <= int(rng) < 2**63:
            raise ValueError(f"rng must be an int seed from -2**63 to 2**63 - 1 (a 64-bit integer), got {rng}")
        return seed_key(int(rng))
    if isinstance(rng, jax.Array) and (_is_typed_key(rng) or rng.shape == (2,)):
        return rng
    raise ValueError(f"rng must be an int seed or a JAX PRNG key, got {rng!r}")
