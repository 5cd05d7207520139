"""Simulating responses from a linear or generalized linear mixed model, replicate by replicate, on the device.

Replicate i draws from the key fold_in(key, i) alone, so a replicate is the same whatever the
batch it is computed in, the number of devices, or how a run is split into parts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from .design import ModelMatrices, Structure
from .deviance import lambdas
from .family import Family
from .glmm import GeneralizedLinearMixedModel, GlmmData, Mode, _eta, _z_lambda, glmm_data


def simulate_response(
    key: Array,
    mats: ModelMatrices,
    structure: Structure,
    beta: Array,
    sigma: Array,
    theta: Array,
    ranef: tuple[Array, ...] | None = None,
) -> Array:
    """y = X beta + sigma (Z Lambda(theta) u + e), with [e; u] one standard normal draw. Pure: vmap over keys.

    Given `ranef` (per term, the (m_t, k_t) random effects b_t, e.g. the fitted model's
    conditional modes: lme4's use.u=TRUE), the random effects are held there instead,
    y = X beta + Z b + sigma e, and theta is not used. The same draw is taken either way, so
    replicate i's e is the same in both."""
    draws = jax.random.normal(key, (structure.n + sum(t.nranef for t in structure.terms),), dtype=beta.dtype)
    y, offset = mats.x @ beta + sigma * draws[: structure.n], structure.n
    for j, (term, lam, refs, z) in enumerate(zip(structure.terms, lambdas(theta, structure), mats.refs, mats.z)):
        if ranef is None:
            b = draws[offset : offset + term.nranef].reshape(term.nlevels, term.k) @ lam.T
            y = y + sigma * jnp.sum(z * b[refs], axis=1)
        else:
            y = y + jnp.sum(z * ranef[j][refs], axis=1)
        offset += term.nranef
    return y


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
    (see Family.sample; binomial: the trials are data.weights). Pure: vmap over keys.

    Given `u` (the fitted model's spherical conditional modes, at its theta: lme4's use.u=TRUE), the
    random effects are held there instead. u and y draw from two halves of the key, so replicate
    i's y given eta uses the same random numbers either way."""
    key_u, key_y = jax.random.split(key)
    if u is None:
        u = jax.random.normal(key_u, (sum(t.nranef for t in structure.terms),), dtype=beta.dtype)
    eta = _eta(Mode(u, beta), _z_lambda(theta, data, structure), data)
    return fam.sample(key_y, fam.inverse_link(eta), data.weights)


def replicate_key(key: Array, index: Array) -> Array:
    """The key of replicate `index` (0-based) of a run seeded with `key`."""
    return jax.random.fold_in(key, index)


def simulated_responses(m, seed: int, nsamp: int, first: int = 0) -> np.ndarray:
    """The responses (nsamp x n) that replicates first..first+nsamp-1 of parametricbootstrap(seed, ., m)
    simulate from m's fitted beta, sigma and theta (a GLMM: beta, theta): to refit them by other means."""
    with jax.enable_x64(True):
        beta, theta = jnp.asarray(m.beta.to_numpy()[m.design.estimable]), jnp.asarray(m.theta)
        key = jax.random.key(seed)
        if isinstance(m, GeneralizedLinearMixedModel):
            data = jax.tree.map(jnp.asarray, glmm_data(m.design))
            one = lambda i: simulate_glmm_response(replicate_key(key, i), data, m.structure, m.family, beta, theta)  # noqa: E731
        else:
            mats, sigma = jax.tree.map(jnp.asarray, m.design.matrices), jnp.asarray(m.sigma)
            one = lambda i: simulate_response(replicate_key(key, i), mats, m.structure, beta, sigma, theta)  # noqa: E731
        return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(first, first + nsamp)))
