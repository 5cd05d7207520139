"""The parametric bootstrap: simulate many responses from a fitted model and refit them all at once.

MixedModels.jl's `parametricbootstrap`, done as batched JAX computation: per batch of replicate
indices, one `jit(vmap(...))` simulates each response from its own key, reduces it to its
sufficient statistics (Z'y, X'y, y'y) and refits it, the blocks Z'Z, Z'X, X'X being shared by
all lanes. A vmapped while-loop runs until its slowest lane finishes, so each call is capped at
`ROUND_MAXITER` iterations and lanes are refilled as their replicates finish (see `_run`).
"""

from __future__ import annotations

import math
import sys
import warnings
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from ._compile import jit
from .design import ModelMatrices, Structure, suffstats
from .model import FitResult, LinearMixedModel, fit_response, floor_eigenvalues, objective_hessian, solver_options
from .results import MixedModelBootstrap, Replicates
from .simulate import replicate_key, simulate_response
from .solver import SolverOptions

ROUND_MAXITER = 8
_CPU_MEMORY_BUDGET = 2 * 1024**3  # bytes a batch may use on a CPU, roughly


def _memory_budget() -> int:
    """Bytes a batch may use: 2 GiB on a CPU, a quarter of an accelerator's memory."""
    if jax.default_backend() == "cpu":
        return _CPU_MEMORY_BUDGET
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("bytes_limit", 4 * _CPU_MEMORY_BUDGET) // 4)


@partial(jit, static_argnames=("structure", "opts"))
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
) -> FitResult:
    """Simulate and refit replicates `indices`, each from its own start theta0 and BFGS Hessian h0,
    for at most `budget` iterations each."""
    beta, sigma, theta = sim

    def one(i, start, hess, most):
        y = simulate_response(replicate_key(key, i), mats, structure, beta, sigma, theta)
        return fit_response(suffstats(mats, structure, y), start, blocks, structure, reml, opts, hess, most)

    return jax.vmap(one)(indices, theta0, h0, budget)


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _as_key(rng) -> Array:
    if _is_count(rng):
        return jax.random.key(int(rng))
    if isinstance(rng, jax.Array) and (jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) or rng.shape == (2,)):
        return rng
    raise ValueError(f"rng must be an int seed or a JAX PRNG key, got {rng!r}")


def _default_batch_size(m: LinearMixedModel, nsamp: int) -> int:
    """A power of two (few distinct compiled shapes) within the memory budget: at most 1024 lanes
    on a CPU, where larger batches gain nothing, and 65536 on an accelerator, which needs them."""
    s = m.structure
    t1 = s.terms[0]
    d = s.qrest + s.p + 1
    npairs = len(m.design.blocks.pair_level)
    lane_bytes = 8 * (4 * s.n + 16 * t1.nlevels * t1.k**2 + 16 * d * d + 8 * npairs * t1.k**2)
    most = 1024 if jax.default_backend() == "cpu" else 65536
    # A quarter of nsamp at most, so that lanes are refilled and the slowest replicates do not
    # set the pace of the whole run.
    cap = max(1, min(most, _memory_budget() // lane_bytes, max(1, nsamp // 4)))
    return 1 << (cap.bit_length() - 1)


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
) -> MixedModelBootstrap:
    """Simulate `nsamp` responses y = X beta + sigma (Z Lambda(theta) u + e) from `m` and refit each.

    rng: an int seed or a JAX key; replicate i uses fold_in(key, i) alone, so results do not depend
    on `batch_size`. ftype: storage precision of the results (fits run in float64).
    optsum_overrides: solver settings for the replicate fits (ftol_rel, ftol_abs, xtol_abs, maxiter).
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
    batch = int(batch_size or _default_batch_size(m, nsamp))
    with jax.enable_x64(True):
        key = _as_key(rng)
        res = _run(key, nsamp, m, sim, opts, batch, progress)
    failed = int((~res.converged).sum())
    if failed:
        warnings.warn(f"{failed} of {nsamp} bootstrap replicates did not converge; see samp.converged", RuntimeWarning, stacklevel=2)
    return MixedModelBootstrap(m, res.astype(ftype), sim=sim)


def _run(key, nsamp: int, m: LinearMixedModel, sim, opts: SolverOptions, batch: int, progress: bool) -> Replicates:
    """Fit all replicates through one compiled batch shape, refilling the lanes as replicates finish.

    Each call runs at most `ROUND_MAXITER` solver iterations on `batch` lanes. A lane whose
    replicate converged (or used up `opts.maxiter`) is stored and refilled with the next replicate;
    one that needs more iterations continues, from where it stopped (theta and the BFGS Hessian),
    in the next call. So no batch
    waits for its slowest lane, and every call has the same shape: one compilation."""
    mats = jax.tree.map(jnp.asarray, m.design.matrices)
    blocks = jax.tree.map(jnp.asarray, m.design.blocks)
    beta, sigma, theta = sim
    sim_dev = (jnp.asarray(beta), jnp.asarray(sigma), jnp.asarray(theta))
    # The generating theta is a good start, but a diagonal element at exactly 0 is a stationary
    # point of the deviance (by symmetry), so starts are kept off the boundary.
    start = np.where(m.lowerbd == 0.0, np.maximum(theta, 0.1), theta)
    reml = jnp.asarray(m.REML)
    if np.array_equal(start, m.theta):  # the fit's own final Hessian: nothing more to compile
        h0 = floor_eigenvalues(m._fit["hessian"])
    else:
        stats = suffstats(mats, m.structure, jnp.asarray(m.design.y))
        h0 = floor_eigenvalues(objective_hessian(jnp.asarray(start), blocks, stats, structure=m.structure, reml=reml))
    round_opts = opts._replace(maxiter=min(opts.maxiter, ROUND_MAXITER))
    out = Replicates.empty(nsamp, m)
    lane_index = np.full(batch, -1)  # replicate in each lane; -1 for an idle lane
    lane_theta = np.tile(start, (batch, 1))
    lane_hess = np.tile(h0, (batch, 1, 1))
    lane_used = np.zeros(batch, dtype=np.int64)  # iterations spent in earlier calls
    upcoming = 0
    show = progress and sys.stderr.isatty()
    from tqdm.auto import tqdm

    with tqdm(total=nsamp, disable=not show, unit="rep", desc="bootstrap") as bar:
        while True:
            idle = np.flatnonzero(lane_index < 0)
            fresh = idle[: max(0, min(len(idle), nsamp - upcoming))]
            lane_index[fresh] = np.arange(upcoming, upcoming + len(fresh))
            lane_theta[fresh], lane_hess[fresh], lane_used[fresh] = start, h0, 0
            upcoming += len(fresh)
            busy = lane_index >= 0
            if not busy.any():
                break
            res = jax.device_get(
                _fit_replicates(
                    key, jnp.asarray(np.maximum(lane_index, 0)), jnp.asarray(lane_theta), jnp.asarray(lane_hess),
                    jnp.asarray(opts.maxiter - lane_used),
                    sim_dev, mats, blocks, structure=m.structure, reml=reml, opts=round_opts,
                )
            )
            used = lane_used + res.niter
            finished = busy & (res.converged | (used >= opts.maxiter) | ~np.isfinite(res.objective))
            lanes = np.flatnonzero(finished)
            out.store(lane_index[lanes], jax.tree.map(lambda a: a[lanes], res), m, extra_iterations=lane_used[lanes])
            bar.update(len(lanes))
            lane_index[lanes] = -1
            going = busy & ~finished
            lane_theta[going], lane_hess[going], lane_used[going] = res.theta[going], res.hessian[going], used[going]
    return out
