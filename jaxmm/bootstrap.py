"""The parametric bootstrap: simulate many responses from a fitted model and refit them all at once.

MixedModels.jl's `parametricbootstrap`, done as batched JAX computation: per batch of replicate
indices, one `jit(vmap(...))` simulates each response from its own key, reduces it to its
sufficient statistics (Z'y, X'y, y'y) and refits it, the blocks Z'Z, Z'X, X'X being shared by
all lanes. A vmapped while-loop runs until its slowest lane finishes, so each call is capped at
`ROUND_MAXITER` iterations and lanes are refilled as their replicates finish (see `_run`).

Scale-out uses JAX's own machinery: the lanes of a batch are spread over the local devices with
`shard_map` over a one-axis mesh (each device runs its own while-loops on its lanes), and when
JAX runs as several processes (`jax.distributed.initialize()`), each process fits a contiguous
share of the replicates and the shares are gathered (`process_allgather`), so every process
returns the whole table. Replicate i depends on (rng, i) alone, so the table is the same,
replicate for replicate, on one device or many, in one process or several.
"""

from __future__ import annotations

import math
import sys
import warnings
from functools import partial
from dataclasses import fields
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ._compile import jit
from .design import ModelMatrices, Structure, suffstats
from .model import FitResult, LinearMixedModel, fit_response, floor_eigenvalues, objective_hessian, solver_options
from .results import MixedModelBootstrap, Replicates
from .simulate import replicate_key, simulate_response
from .solver import SolverOptions

ROUND_MAXITER = 8
_CPU_MEMORY_BUDGET = 2 * 1024**3  # bytes a batch may use on a CPU, roughly
# On a CPU, lanes whose working set stays within about this many bytes run fastest (measured on
# sleepstudy, 10,000 replicates: 128 lanes 0.63 s, 1024 lanes 1.67 s; dyestuff: flat from 256 up).
_CPU_CACHE_BUDGET = 2 * 1024**2
_LANES = "replicates"  # the mesh axis that the lanes of a batch are spread over


def _memory_budget() -> int:
    """Bytes a batch may use: 2 GiB on a CPU, a quarter of an accelerator's memory."""
    if jax.default_backend() == "cpu":
        return _CPU_MEMORY_BUDGET
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("bytes_limit", 4 * _CPU_MEMORY_BUDGET) // 4)


@partial(jit, static_argnames=("structure", "opts", "mesh"))
def _fit_replicates(
    key: Array,
    indices: Array,
    theta0: Array,
    h0: Array,
    budget: Array,
    sim: tuple[Array, Array, Array],
    mats: ModelMatrices,
    blocks,
    structure: Structure,
    reml: Array,
    opts: SolverOptions,
    mesh: Mesh,
) -> FitResult:
    """Simulate and refit replicates `indices`, each from its own start theta0 and BFGS Hessian h0,
    for at most `budget` iterations each; the lanes are spread over the devices of `mesh`."""

    def device_lanes(key, sim, mats, blocks, reml, indices, theta0, h0, budget):
        beta, sigma, theta = sim

        def one(i, start, hess, most):
            y = simulate_response(replicate_key(key, i), mats, structure, beta, sigma, theta)
            return fit_response(suffstats(mats, structure, y), start, blocks, structure, reml, opts, hess, most)

        return jax.vmap(one)(indices, theta0, h0, budget)

    shared, spread = P(), P(_LANES)
    # check_vma=False: nothing crosses devices, so JAX need not track which values vary across them.
    return jax.shard_map(device_lanes, mesh=mesh, in_specs=(shared,) * 5 + (spread,) * 4, out_specs=spread, check_vma=False)(
        key, sim, mats, blocks, reml, indices, theta0, h0, budget
    )


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


def lane_width(m: LinearMixedModel, platform: str) -> int:
    """How many lanes a device fits at a time by default: a power of two, fixed per model and kind
    of device, never by nsamp (see `parametricbootstrap` on bit-identical results). On a CPU, as
    many lanes as fit in about 2 MiB (cache-sized working sets run fastest); on an accelerator,
    which needs wide batches, up to 16384 within a quarter of its memory."""
    s = m.structure
    t1 = s.terms[0]
    d = s.qrest + s.p + 1
    npairs = len(m.design.blocks.pair_level)
    lane_bytes = 8 * (4 * s.n + 16 * t1.nlevels * t1.k**2 + 16 * d * d + 8 * npairs * t1.k**2)
    most = min(1024, max(16, _CPU_CACHE_BUDGET // lane_bytes)) if platform == "cpu" else 16384
    cap = max(1, min(most, _memory_budget() // lane_bytes))
    return 1 << (cap.bit_length() - 1)


def _process_share(nsamp: int, index: int, count: int) -> range:
    """The replicates process `index` of `count` fits: a contiguous share."""
    return range(index * nsamp // count, (index + 1) * nsamp // count)


def _simulation_parameters(m: LinearMixedModel, beta, sigma, theta) -> tuple[np.ndarray, float, np.ndarray]:
    """The (beta, sigma, theta) to simulate from: the fitted ones unless given, checked."""
    est = m.design.estimable
    if beta is None:
        beta = m.beta.to_numpy()
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    if beta.shape[0] not in (len(est), int(est.sum())) or not np.all(np.isfinite(beta)):
        raise ValueError(f"beta must hold {len(est)} finite values (one per coefficient: {', '.join(m.coefnames)}), got {beta.tolist()}")
    beta = beta[est] if beta.shape[0] == len(est) else beta
    sigma = m.sigma if sigma is None else sigma
    if isinstance(sigma, bool) or not (isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
    theta = m.theta if theta is None else m._checked_theta(theta, "theta")
    return beta, float(sigma), theta


def parametricbootstrap(
    rng,
    nsamp: int,
    m: LinearMixedModel,
    ftype=np.float64,
    *,
    beta=None,
    sigma=None,
    theta=None,
    progress: bool = True,
    optsum_overrides: dict[str, Any] | None = None,
    batch_size: int | None = None,
    devices=None,
) -> MixedModelBootstrap:
    """Simulate `nsamp` responses y = X beta + sigma (Z Lambda(theta) u + e) from `m` and refit each.

    rng: an int seed or a JAX key; replicate i draws from fold_in(key, i) alone.
    ftype: storage precision of the results (fits run in float64).
    optsum_overrides: solver settings for the replicate fits (ftol_rel, ftol_abs, xtol_abs, maxiter).
    batch_size: lanes fitted per call over all devices, a multiple of their number (default:
    lane_width(m) per device). devices: the local devices to spread the lanes over: all (default),
    a count, or a list from jax.local_devices(). Under jax.distributed, each process fits its
    share on its own devices and every process returns the whole table.

    Reproducibility: with the same lanes per device, replicate i's numbers are bit-identical
    whatever nsamp, the run's split into processes, or the replicate's lane. A different number
    of lanes per device (batch_size, or devices on one CPU) changes how XLA vectorises the lanes
    and so the rounding of the results, in the last bits (about 1e-12 relative).
    """
    if not isinstance(m, LinearMixedModel) or m.optsum is None:
        raise ValueError("m must be a fitted LinearMixedModel (jaxmm.fit(...))")
    if not _is_count(nsamp) or nsamp < 1:
        raise ValueError(f"nsamp must be a positive integer, got {nsamp!r}")
    try:
        dtype = np.dtype(ftype)
    except TypeError:
        dtype = None
    if dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"ftype must be np.float16, np.float32 or np.float64, got {ftype!r}")
    ftype = dtype
    if batch_size is not None and (not _is_count(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    nsamp = int(nsamp)
    opts = solver_options(optsum_overrides)
    sim = _simulation_parameters(m, beta, sigma, theta)
    chosen = _local_devices(devices)
    share = _process_share(nsamp, jax.process_index(), jax.process_count())
    mesh = Mesh(np.array(chosen), (_LANES,))
    if batch_size is not None and batch_size % len(chosen):
        raise ValueError(f"batch_size must be a multiple of the number of devices ({len(chosen)}), got {batch_size}")
    batch = int(batch_size or len(chosen) * lane_width(m, chosen[0].platform))
    with jax.enable_x64(True):
        key = _as_key(rng)
        res = _run(key, share, m, sim, opts, batch, mesh, progress and jax.process_index() == 0)
        if jax.process_count() > 1:
            res = _gather(res, nsamp)
    failed = int((~res.converged).sum())
    if failed:
        warnings.warn(f"{failed} of {nsamp} bootstrap replicates did not converge; see samp.converged", RuntimeWarning, stacklevel=2)
    return MixedModelBootstrap(m, res.astype(ftype), sim=sim)


def _gather(part: Replicates, nsamp: int) -> Replicates:
    """Every process's share, in replicate order, on every process."""
    longest = -(-nsamp // jax.process_count())
    padded = {f.name: np.resize(getattr(part, f.name), (longest, *getattr(part, f.name).shape[1:])) for f in fields(part)}
    gathered = multihost_utils.process_allgather(padded)
    sizes = [len(_process_share(nsamp, i, jax.process_count())) for i in range(jax.process_count())]
    return Replicates(**{name: np.concatenate([a[i, :n] for i, n in enumerate(sizes)]) for name, a in gathered.items()})


def _run(key, share: range, m: LinearMixedModel, sim, opts: SolverOptions, batch: int, mesh: Mesh, progress: bool) -> Replicates:
    """Fit replicates `share` through one compiled batch shape, refilling the lanes as replicates finish.

    Each call runs at most `ROUND_MAXITER` solver iterations on `batch` lanes. A lane whose
    replicate converged (or used up `opts.maxiter`) is stored and refilled with the next replicate;
    one that needs more iterations continues, from where it stopped (theta and the BFGS Hessian),
    in the next call. So no batch waits for its slowest lane, and every call has the same shape:
    one compilation."""
    shared, spread = NamedSharding(mesh, P()), NamedSharding(mesh, P(_LANES))
    mats = jax.device_put(jax.tree.map(jnp.asarray, m.design.matrices), shared)
    blocks = jax.device_put(jax.tree.map(jnp.asarray, m.design.blocks), shared)
    beta, sigma, theta = sim
    sim_dev = jax.device_put((jnp.asarray(beta), jnp.asarray(sigma), jnp.asarray(theta)), shared)
    key = jax.device_put(key, shared)
    # The generating theta is a good start, but a diagonal element at exactly 0 is a stationary
    # point of the deviance (by symmetry), so starts are kept off the boundary.
    start = np.where(m.lowerbd == 0.0, np.maximum(theta, 0.1), theta)
    reml = jax.device_put(jnp.asarray(m.REML), shared)
    if np.array_equal(start, m.theta):  # the fit's own final Hessian: nothing more to compile
        h0 = floor_eigenvalues(m._fit["hessian"])
    else:
        here = jax.tree.map(jnp.asarray, (m.design.blocks, suffstats(m.design.matrices, m.structure, jnp.asarray(m.design.y))))
        h0 = floor_eigenvalues(objective_hessian(jnp.asarray(start), *here, structure=m.structure, reml=jnp.asarray(m.REML)))
    round_opts = opts._replace(maxiter=min(opts.maxiter, ROUND_MAXITER))
    out = Replicates.empty(len(share), m)
    lane_index = np.full(batch, -1)  # replicate (position in the share) in each lane; -1 for an idle lane
    lane_theta = np.tile(start, (batch, 1))
    lane_hess = np.tile(h0, (batch, 1, 1))
    lane_used = np.zeros(batch, dtype=np.int64)  # iterations spent in earlier calls
    upcoming = 0
    show = progress and sys.stderr.isatty()
    from tqdm import tqdm

    def lanes(a: np.ndarray) -> Array:
        return jax.device_put(a, spread)

    with tqdm(total=len(share), disable=not show, unit="rep", desc="bootstrap") as bar:
        while True:
            idle = np.flatnonzero(lane_index < 0)
            fresh = idle[: max(0, min(len(idle), len(share) - upcoming))]
            lane_index[fresh] = np.arange(upcoming, upcoming + len(fresh))
            lane_theta[fresh], lane_hess[fresh], lane_used[fresh] = start, h0, 0
            upcoming += len(fresh)
            busy = lane_index >= 0
            if not busy.any():
                break
            res = jax.device_get(
                _fit_replicates(
                    key, lanes(share.start + np.maximum(lane_index, 0)), lanes(lane_theta), lanes(lane_hess),
                    lanes(opts.maxiter - lane_used), sim_dev, mats, blocks,
                    structure=m.structure, reml=reml, opts=round_opts, mesh=mesh,
                )
            )
            used = lane_used + res.niter
            finished = busy & (res.converged | (used >= opts.maxiter) | ~np.isfinite(res.objective))
            done = np.flatnonzero(finished)
            out.store(lane_index[done], jax.tree.map(lambda a: a[done], res), m, extra_iterations=lane_used[done])
            bar.update(len(done))
            lane_index[done] = -1
            going = busy & ~finished
            lane_theta[going], lane_hess[going], lane_used[going] = res.theta[going], res.hessian[going], used[going]
    return out
