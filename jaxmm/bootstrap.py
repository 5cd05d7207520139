"""The parametric bootstrap: simulate many responses from a fitted model and refit them all at once.

MixedModels.jl's `parametricbootstrap`, done as batched JAX computation: per batch of replicate
indices, one `jit(vmap(...))` simulates each response from its own key, reduces it to its
sufficient statistics (Z'y, X'y, y'y) and refits it, the blocks Z'Z, Z'X, X'X being shared by
all lanes. A vmapped while-loop runs until its slowest lane finishes, so the batched pass is capped
at `FIRST_PASS_MAXITER` iterations and the few lanes that need more continue, from where they
stopped, in a small follow-up pass with the full iteration budget.
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

from .design import ModelMatrices, Structure, suffstats
from .model import FitResult, LinearMixedModel, fit_response, solver_options
from .results import MixedModelBootstrap, Replicates
from .simulate import replicate_key, simulate_response
from .solver import SolverOptions

FIRST_PASS_MAXITER = 16
_MEMORY_BUDGET = 2 * 1024**3  # bytes of device memory a batch may use, roughly


@partial(jax.jit, static_argnames=("structure", "opts"))
def _fit_replicates(
    key: Array,
    indices: Array,
    theta0: Array,
    sim: tuple[Array, Array, Array],
    mats: ModelMatrices,
    blocks,
    structure: Structure,
    reml: Array,
    opts: SolverOptions,
) -> FitResult:
    """Simulate and refit replicates `indices` (theta0: one start, or one per replicate)."""
    beta, sigma, theta = sim

    def one(i, start):
        y = simulate_response(replicate_key(key, i), mats, structure, beta, sigma, theta)
        return fit_response(suffstats(mats, structure, y), start, blocks, structure, reml, opts)

    starts = jnp.broadcast_to(theta0, (indices.shape[0], theta0.shape[-1]))
    return jax.vmap(one)(indices, starts)


def _as_key(rng) -> Array:
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return jax.random.key(int(rng))
    if isinstance(rng, jax.Array) and (jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) or rng.shape == (2,)):
        return rng
    raise ValueError(f"rng must be an int seed or a JAX PRNG key, got {rng!r}")


def _default_batch_size(m: LinearMixedModel, nsamp: int) -> int:
    s = m.structure
    t1 = s.terms[0]
    d = s.qrest + s.p + 1
    npairs = len(m.design.blocks.pair_level)
    lane_bytes = 8 * (4 * s.n + 16 * t1.nlevels * t1.k**2 + 16 * d * d + 8 * npairs * t1.k**2)
    return int(max(1, min(nsamp, 2048, _MEMORY_BUDGET // lane_bytes)))


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
    if not (isinstance(sigma, (int, float, np.floating, np.integer)) and math.isfinite(sigma) and sigma > 0):
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
    if not isinstance(nsamp, (int, np.integer)) or isinstance(nsamp, bool) or nsamp < 1:
        raise ValueError(f"nsamp must be a positive integer, got {nsamp!r}")
    ftype = np.dtype(ftype)
    if ftype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"ftype must be float16, float32 or float64, got {ftype}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
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
    mats = jax.tree.map(jnp.asarray, m.design.matrices)
    blocks = jax.tree.map(jnp.asarray, m.design.blocks)
    beta, sigma, theta = sim
    sim_dev = (jnp.asarray(beta), jnp.asarray(sigma), jnp.asarray(theta))
    # The generating theta is a good start, but a diagonal element at exactly 0 is a stationary
    # point of the deviance (by symmetry), so starts are kept off the boundary.
    theta0 = jnp.asarray(np.where(m.lowerbd == 0.0, np.maximum(theta, 0.1), theta))
    reml = jnp.asarray(m.REML)
    first = opts._replace(maxiter=min(opts.maxiter, FIRST_PASS_MAXITER))
    out = Replicates.empty(nsamp, m)
    show = progress and sys.stderr.isatty()
    from tqdm.auto import tqdm

    with tqdm(total=nsamp, disable=not show, unit="rep", desc="bootstrap") as bar:
        for start in range(0, nsamp, batch):
            count = min(batch, nsamp - start)
            indices = jnp.arange(start, start + batch)  # the last batch is padded: one compiled shape
            res = _fit_replicates(key, indices, theta0, sim_dev, mats, blocks, m.structure, reml, first)
            out.store(np.arange(start, start + count), jax.device_get(res), m)
            bar.update(count)
    _finish_unconverged(key, out, m, sim_dev, mats, blocks, reml, opts, first)
    return out


def _finish_unconverged(key, out: Replicates, m, sim_dev, mats, blocks, reml, opts: SolverOptions, first: SolverOptions) -> None:
    """Continue the lanes the capped pass left unconverged, from where they stopped."""
    todo = np.flatnonzero(~out.converged)
    if len(todo) == 0 or opts.maxiter <= first.maxiter:
        return
    rest = opts._replace(maxiter=opts.maxiter - first.maxiter)
    size = 1 << int(math.ceil(math.log2(len(todo))))  # few distinct shapes to compile
    padded = np.resize(todo, size)
    res = _fit_replicates(key, jnp.asarray(padded), jnp.asarray(out.theta[padded]), sim_dev, mats, blocks, m.structure, reml, rest)
    res = jax.device_get(res)
    out.store(todo, jax.tree.map(lambda a: a[: len(todo)], res), m, extra_iterations=first.maxiter)
