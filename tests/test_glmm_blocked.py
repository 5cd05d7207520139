"""The blocked PIRLS of glmm/laplace.py (term 1 eliminated level by level, the Schur complement over
[Zr, X] factored densely) against the Laplace objective computed densely: Z Lambda formed as an
n x q matrix, the conditional mode found by damped Newton on the penalised deviance with the full
q x q (or (q + p) x (q + p)) Hessian, and log|Lambda'Z'WZ Lambda + I| from a dense determinant."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from jaxmm.glmm import GeneralizedLinearMixedModel
from jaxmm.glmm.laplace import glmm_data, laplace, z_lambda


def _dense_laplace(theta, beta, data, structure, fam, fast):
    """(objective, u, beta) of the Laplace approximation, all in dense q x q algebra."""
    n, q = data.y.shape[0], sum(t.nranef for t in structure.terms)
    zlam = jnp.zeros((n, q)).at[jnp.arange(n)[:, None], data.index].add(z_lambda(theta, data, structure))
    p = beta.shape[0] if fast else 0

    def eta(v):
        return data.x @ (v[q:] if fast else beta) + data.offset + zlam @ v[:q]

    def half_pdev(v):
        return 0.5 * (jnp.sum(fam.deviance(data.y, data.weights, eta(v), data.shape)) + v[:q] @ v[:q])

    def newton(v, _):  # the Newton step, halved until it does not raise the penalised deviance
        step = -jnp.linalg.solve(jax.hessian(half_pdev)(v), jax.grad(half_pdev)(v))
        t = lax.while_loop(lambda t: (half_pdev(v + t * step) > half_pdev(v)) & (t > 1e-6), lambda t: t / 2, 1.0)
        return v + t * step, None

    v = lax.scan(newton, jnp.concatenate([jnp.zeros(q), beta[:p]]), None, length=40)[0]
    w = fam.fisher_weights(data.weights, eta(v), data.shape)
    logdet = jnp.linalg.slogdet(zlam.T @ (w[:, None] * zlam) + jnp.eye(q))[1]
    return 2.0 * half_pdev(v) + logdet, v[:q], (v[q:] if fast else beta)


def _crossed(family: str, seed: int, ng: int, nh: int, n: int, nested: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, ng, n)
    h = g % nh if nested else rng.integers(0, nh, n)
    x = rng.normal(size=n)
    b_g, b_h = rng.normal(size=(2, ng)) * [[0.8], [0.4]], 0.6 * rng.normal(size=nh)
    eta = -0.3 + 0.5 * x + b_g[0, g] + b_g[1, g] * x + b_h[h]
    y = rng.binomial(1, 1 / (1 + np.exp(-eta))) if family == "bernoulli" else rng.poisson(np.exp(eta))
    return pd.DataFrame({"y": y.astype(float), "x": x, "g": [f"g{i}" for i in g], "h": [f"h{i}" for i in h]})


def _compare(formula, frame, family, thetas, fast):
    m = GeneralizedLinearMixedModel(formula, frame, family)
    with jax.enable_x64(True):
        data = jax.tree.map(jnp.asarray, glmm_data(m.design))
        beta = jnp.asarray(np.linspace(-0.4, 0.3, m.structure.p))
        for theta in thetas:
            theta = jnp.asarray(theta, dtype=jnp.float64)
            statics = (m.structure, m.family, fast)
            blocked = jax.jit(laplace, static_argnums=(3, 4, 5))(theta, beta, data, *statics)
            objective, u, b = jax.jit(_dense_laplace, static_argnums=(3, 4, 5))(theta, beta, data, *statics)
            assert float(blocked.objective) == pytest.approx(float(objective), rel=1e-10)
            np.testing.assert_allclose(blocked.mode.u, u, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(blocked.mode.beta, b, rtol=1e-7, atol=1e-9)
    return m


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
@pytest.mark.parametrize("fast", [False, True], ids=["laplace", "fast"])
def test_crossed_slopes_match_dense(family, fast):
    """(1 + x | g) + (1 | h), crossed: term 1 has two columns and a full lambda_1."""
    frame = _crossed(family, 1, ng=30, nh=12, n=400)
    m = _compare("y ~ 1 + x + (1 + x|g) + (1|h)", frame, family, [[0.9, -0.3, 0.5, 0.7], [0.2, 0.4, 0.0, 1.3]], fast)
    assert [t.k for t in m.structure.terms] == [2, 1]


@settings(max_examples=4, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**16),
    ng=st.integers(2, 25),
    nh=st.integers(2, 9),
    nested=st.booleans(),
    family=st.sampled_from(["bernoulli", "poisson"]),
    slope_last=st.booleans(),
)
def test_blocked_matches_dense_on_random_designs(seed, ng, nh, nested, family, slope_last):
    """Random crossed or nested designs, the slope term first or last in lme4's order, empty levels of
    pairs included: the blocked objective and mode are the dense ones."""
    frame = _crossed(family, seed, ng=ng, nh=nh, n=120, nested=nested)
    formula = "y ~ 1 + x + (1|g) + (1 + x|h)" if slope_last else "y ~ 1 + x + (1 + x|g) + (1|h)"
    m = GeneralizedLinearMixedModel(formula, frame, family)
    ntheta = m.structure.ntheta
    thetas = [np.linspace(0.3, 1.1, ntheta), np.full(ntheta, 0.05)]
    _compare(formula, frame, family, thetas, fast=seed % 2 == 0)


@pytest.mark.parametrize("fast", [False, True], ids=["laplace", "fast"])
@pytest.mark.parametrize("slopes", ["(1 + x|g) + (1|h)", "(1|g) + (1 + x|h)"])
def test_three_level_nesting_matches_dense(slopes, fast):
    """(1|obs) + g + h, each row its own obs level, g nested in h (grouseticks' index in brood in
    location): a chain of two nested terms after term 1, the first eliminated with its product summed
    per level of the second (laplace._nested_gram), with a slope on either."""
    frame = _crossed("poisson", 7, ng=40, nh=8, n=150, nested=True).assign(obs=lambda d: [f"o{i}" for i in d.index])
    formula = f"y ~ 1 + x + (1|obs) + {slopes}"
    ntheta = GeneralizedLinearMixedModel(formula, frame, "poisson").structure.ntheta
    m = _compare(formula, frame, "poisson", [np.linspace(0.4, 0.9, ntheta)], fast)
    assert len(m._pattern.parents) == 2 and m.structure.terms[0].nlevels == 150
