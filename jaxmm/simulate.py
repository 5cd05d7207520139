"""Simulating responses from a linear mixed model, replicate by replicate, on the device.

Replicate i draws from the key fold_in(key, i) alone, so a replicate is the same whatever the
batch it is computed in, the number of devices, or how a run is split into parts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from .design import ModelMatrices, Structure
from .deviance import lambdas


def simulate_response(key: Array, mats: ModelMatrices, structure: Structure, beta: Array, sigma: Array, theta: Array) -> Array:
    """y = X beta + sigma (Z Lambda(theta) u + e), with u and e standard normal. Pure: vmap over keys."""
    keys = jax.random.split(key, len(structure.terms) + 1)
    y = mats.x @ beta + sigma * jax.random.normal(keys[0], (structure.n,), dtype=beta.dtype)
    for term, lam, refs, z, k in zip(structure.terms, lambdas(theta, structure), mats.refs, mats.z, keys[1:]):
        b = jax.random.normal(k, (term.nlevels, term.k), dtype=beta.dtype) @ lam.T
        y = y + sigma * jnp.sum(z * b[refs], axis=1)
    return y


def replicate_key(key: Array, index: Array) -> Array:
    """The key of replicate `index` (0-based) of a run seeded with `key`."""
    return jax.random.fold_in(key, index)
