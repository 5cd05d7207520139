"""Unit tests of jaxmm.linalg against independent references, in float64.

The unrolled Cholesky factor and triangular solves (chol_small, solve_lower_small, solve_upper_small,
cho_solve_small) and the dense `cholesky` are compared with numpy.linalg.cholesky, numpy.linalg.solve and
scipy.linalg.solve_triangular; `cholesky_inverse` with numpy's inv(cholesky(S)); `leading_logdets` with
numpy.linalg.slogdet of the leading blocks S[:k, :k]. The custom JVP rules are checked with
jax.test_util.check_grads (orders 1 and 2, forward and reverse) through a smooth map from an unconstrained
matrix A to the symmetric positive-definite S = A A' + n I, for an unrolled size (<= UNROLL_MAX), a
looped size (<= LOOP_MAX) and a size factored by LAPACK and inverted by halves (> BLOCK_MAX), and
against a numpy central difference and the closed forms
d log det S_k = tr(S_k^-1 dS_k) and d2 log det S = -tr(S^-1 U S^-1 V).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

from jaxmm.linalg import (
    BLOCK_MAX,
    STACK_UNROLL_MAX,
    UNROLL_MAX,
    cho_solve_small,
    cho_solve_stack,
    chol_small,
    chol_stack,
    cholesky,
    cholesky_inverse,
    leading_logdets,
    solve_lower_small,
    solve_upper_small,
)

SMALL_SIZES = list(range(1, UNROLL_MAX + 1))
LARGE_SIZE = 7
BLOCKED_SIZE = 2 * BLOCK_MAX + 3  # LAPACK's factor; L^-1 and S^-1 by halves, two levels deep
BATCH = (5, 3)
GRAD_TOL = {"eps": 1e-4, "atol": 1e-5, "rtol": 1e-5}  # check_grads' finite differences, in float64


def random_spd(rng: np.random.Generator, k: int, batch: tuple[int, ...] = ()) -> np.ndarray:
    """Random symmetric positive-definite matrices of shape batch + (k, k), moderately conditioned."""
    a = rng.standard_normal(batch + (k, k))
    return a @ np.swapaxes(a, -1, -2) + 0.5 * k * np.eye(k)


def random_sym(rng: np.random.Generator, k: int) -> np.ndarray:
    d = rng.standard_normal((k, k))
    return d + d.T


def spd_from(a: jax.Array) -> jax.Array:
    """S = A A' + n I: symmetric positive definite for every square A, smooth in A."""
    n = a.shape[-1]
    return a @ a.T + n * jnp.eye(n, dtype=a.dtype)


def numpy_leading_logdets(s: np.ndarray, cuts: tuple[int, ...]) -> np.ndarray:
    out = []
    for c in cuts:
        if c == 0:
            out.append(0.0)
            continue
        sign, logdet = np.linalg.slogdet(s[:c, :c])
        assert sign == 1.0
        out.append(logdet)
    return np.array(out)


@pytest.mark.parametrize("k", SMALL_SIZES)
def test_chol_small_matches_numpy_for_a_batch_a_vmap_and_a_single_matrix(k):
    rng = np.random.default_rng(10 + k)
    s = random_spd(rng, k, BATCH)
    expected = np.linalg.cholesky(s)
    with jax.enable_x64(True):
        stacked, mapped, single = jax.jit(
            lambda m: (chol_small(m), jax.vmap(jax.vmap(chol_small))(m), chol_small(m[2, 1]))
        )(jnp.asarray(s))
    stacked, mapped, single = np.asarray(stacked), np.asarray(mapped), np.asarray(single)
    assert stacked.shape == mapped.shape == BATCH + (k, k)
    assert stacked.dtype == np.float64
    np.testing.assert_allclose(stacked, expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(mapped, expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(single, expected[2, 1], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(np.triu(stacked, 1), 0.0)


def test_chol_small_not_positive_definite_gives_nan():
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    with jax.enable_x64(True):
        stack = np.asarray(chol_small(jnp.asarray(np.stack([indefinite, 4.0 * np.eye(2)]))))
        scalar = np.asarray(chol_small(jnp.asarray([[-1.0]])))
    assert stack[0, 0, 0] == 1.0 and stack[0, 1, 0] == 2.0
    assert np.isnan(stack[0, 1, 1])
    np.testing.assert_array_equal(stack[1], 2.0 * np.eye(2))
    assert np.isnan(scalar[0, 0])


@pytest.mark.parametrize("k", [3, STACK_UNROLL_MAX + 1, 20])
def test_stack_factor_and_solve_of_any_size_match_numpy_and_vectorise(k):
    """chol_stack / cho_solve_stack (the solver's Hessian: unrolled when tiny, loops beyond) on a stack,
    and NaN for a matrix that is not positive definite."""
    rng = np.random.default_rng(50 + k)
    s = random_spd(rng, k, BATCH)
    s[0, 0] -= 100.0 * k * np.eye(k)
    b = rng.standard_normal(BATCH + (k,))
    with jax.enable_x64(True):
        factors = jax.jit(lambda m, v: (chol_stack(m), cho_solve_stack(chol_stack(m), v), jax.vmap(chol_stack)(m)))
        el, x, mapped = factors(jnp.asarray(s), b)
    el, x = np.asarray(el), np.asarray(x)
    assert np.isnan(el[0, 0]).any() and np.isfinite(el.reshape(-1, k, k)[1:]).all()
    np.testing.assert_allclose(el.reshape(-1, k, k)[1:], np.linalg.cholesky(s.reshape(-1, k, k)[1:]), rtol=1e-12)
    np.testing.assert_allclose(mapped, el, rtol=1e-14)
    expected = np.linalg.solve(s.reshape(-1, k, k)[1:], b.reshape(-1, k)[1:, :, None])[..., 0]
    np.testing.assert_allclose(x.reshape(-1, k)[1:], expected, rtol=1e-9)
    np.testing.assert_array_equal(np.triu(el.reshape(-1, k, k)[1:], 1), 0.0)


@pytest.mark.parametrize("k", SMALL_SIZES)
def test_triangular_and_cholesky_solves_match_scipy_and_numpy(k):
    rng = np.random.default_rng(30 + k)
    s = random_spd(rng, k, BATCH)
    el = np.linalg.cholesky(s)
    b = rng.standard_normal(BATCH + (k, 2))
    with jax.enable_x64(True):
        lower, upper, x, x_mapped = jax.jit(
            lambda el, b: (
                solve_lower_small(el, b),
                solve_upper_small(el, b),
                cho_solve_small(el, b[..., 0]),
                jax.vmap(jax.vmap(cho_solve_small))(el, b[..., 1]),
            )
        )(jnp.asarray(el), jnp.asarray(b))
    lower, upper, x, x_mapped = map(np.asarray, (lower, upper, x, x_mapped))
    assert lower.shape == upper.shape == BATCH + (k, 2)
    assert x.shape == x_mapped.shape == BATCH + (k,)
    for idx in np.ndindex(*BATCH):
        ref_lower = scipy.linalg.solve_triangular(el[idx], b[idx], lower=True)
        ref_upper = scipy.linalg.solve_triangular(el[idx].T, b[idx], lower=False)
        np.testing.assert_allclose(lower[idx], ref_lower, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(upper[idx], ref_upper, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(x[idx], np.linalg.solve(s[idx], b[idx][:, 0]), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(x_mapped[idx], np.linalg.solve(s[idx], b[idx][:, 1]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [2, UNROLL_MAX, UNROLL_MAX + 1, LARGE_SIZE])
def test_cholesky_matches_numpy(k):
    rng = np.random.default_rng(50 + k)
    s = random_spd(rng, k)
    with jax.enable_x64(True):
        el = np.asarray(jax.jit(cholesky)(jnp.asarray(s)))
    np.testing.assert_allclose(el, np.linalg.cholesky(s), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("k", [1, 3, UNROLL_MAX, UNROLL_MAX + 1, LARGE_SIZE, BLOCKED_SIZE])
def test_cholesky_inverse_matches_numpy(k):
    rng = np.random.default_rng(60 + k)
    s = random_spd(rng, k)
    with jax.enable_x64(True):
        linv = np.asarray(jax.jit(cholesky_inverse)(jnp.asarray(s)))
    np.testing.assert_allclose(linv, np.linalg.inv(np.linalg.cholesky(s)), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(linv @ s @ linv.T, np.eye(k), atol=1e-11)


@pytest.mark.parametrize(
    ("k", "cuts"),
    [
        (1, (0, 1)),
        (3, (0, 1, 2, 3)),
        (UNROLL_MAX, (2, 0, UNROLL_MAX)),
        (LARGE_SIZE, (0, 1, 3, 5, LARGE_SIZE)),
        (BLOCKED_SIZE, (0, 1, 200, BLOCKED_SIZE)),
    ],
)
def test_leading_logdets_match_slogdet(k, cuts):
    rng = np.random.default_rng(70 + k)
    s = random_spd(rng, k) * 3.0
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(leading_logdets, static_argnums=1)(jnp.asarray(s), cuts))
    assert got.shape == (len(cuts),)
    np.testing.assert_allclose(got, numpy_leading_logdets(s, cuts), rtol=1e-12, atol=1e-12)
    assert got[cuts.index(0)] == 0.0


@pytest.mark.parametrize("k", [3, LARGE_SIZE, BLOCKED_SIZE])
def test_leading_logdets_value_is_the_same_with_its_derivative(k):
    rng = np.random.default_rng(80 + k)
    cuts = tuple(range(k + 1)) if k <= LARGE_SIZE else (0, 1, k // 2, k - 1, k)
    with jax.enable_x64(True):
        s, ds = jnp.asarray(random_spd(rng, k)), jnp.asarray(random_sym(rng, k))
        value = np.asarray(jax.jit(leading_logdets, static_argnums=1)(s, cuts))
        primal_out, _ = jax.jit(lambda s, ds: jax.jvp(lambda m: leading_logdets(m, cuts), (s,), (ds,)))(s, ds)
    np.testing.assert_array_equal(np.asarray(primal_out), value)
    np.testing.assert_allclose(value, numpy_leading_logdets(np.asarray(s), cuts), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [3, LARGE_SIZE])
def test_cholesky_inverse_jvp_matches_numpy_central_difference(k):
    rng = np.random.default_rng(90 + k)
    s = random_spd(rng, k)
    ds = random_sym(rng, k)
    h = 1e-6
    fd = (np.linalg.inv(np.linalg.cholesky(s + h * ds)) - np.linalg.inv(np.linalg.cholesky(s - h * ds))) / (2 * h)
    with jax.enable_x64(True):
        value, tangent = jax.jit(lambda s, ds: jax.jvp(cholesky_inverse, (s,), (ds,)))(jnp.asarray(s), jnp.asarray(ds))
    np.testing.assert_allclose(np.asarray(value), np.linalg.inv(np.linalg.cholesky(s)), rtol=1e-11, atol=1e-12)
    assert np.max(np.abs(fd)) > 1e-2
    np.testing.assert_allclose(np.asarray(tangent), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", [3, LARGE_SIZE, BLOCKED_SIZE])
def test_leading_logdets_jvp_matches_trace_formula_and_central_difference(k):
    rng = np.random.default_rng(100 + k)
    s = random_spd(rng, k)
    ds = random_sym(rng, k)
    cuts = (0, 1, k // 2, k)
    exact = np.array([np.trace(np.linalg.solve(s[:c, :c], ds[:c, :c])) if c else 0.0 for c in cuts])
    h = 1e-6
    fd = (numpy_leading_logdets(s + h * ds, cuts) - numpy_leading_logdets(s - h * ds, cuts)) / (2 * h)
    with jax.enable_x64(True):
        _, tangent = jax.jit(lambda s, ds: jax.jvp(lambda m: leading_logdets(m, cuts), (s,), (ds,)))(
            jnp.asarray(s), jnp.asarray(ds)
        )
    tangent = np.asarray(tangent)
    assert np.max(np.abs(exact)) > 1e-2
    np.testing.assert_allclose(tangent, exact, rtol=1e-11, atol=1e-12)
    # the difference quotient of log-determinants of order 1e3 (BLOCKED_SIZE) carries ~1e-7 of their rounding
    np.testing.assert_allclose(tangent, fd, rtol=1e-6, atol=1e-8 if k <= LARGE_SIZE else 1e-6)


@pytest.mark.parametrize("k", [2, LARGE_SIZE, BLOCKED_SIZE])
def test_second_derivative_of_leading_logdets_matches_closed_form(k):
    rng = np.random.default_rng(130 + k)
    s = random_spd(rng, k)
    u, v = random_sym(rng, k), random_sym(rng, k)
    cuts = (1 if k <= LARGE_SIZE else k // 4, k // 2 + 1, k)
    exact = []
    for c in cuts:
        si = np.linalg.inv(s[:c, :c])
        exact.append(-np.trace(si @ u[:c, :c] @ si @ v[:c, :c]))
    with jax.enable_x64(True):
        s_, u_, v_ = jnp.asarray(s), jnp.asarray(u), jnp.asarray(v)

        def along(t1, t2):
            return leading_logdets(s_ + t1 * u_ + t2 * v_, cuts)

        second = np.asarray(jax.jit(jax.jacfwd(jax.jacrev(along, argnums=0), argnums=1))(0.0, 0.0))
    assert second.shape == (len(cuts),)
    assert np.min(np.abs(exact)) > 1e-4
    np.testing.assert_allclose(second, exact, rtol=1e-10)


# check_grads(order=2) checks the first-order JVP and VJP too, then those of the JVP and of the VJP.
@pytest.mark.parametrize("k", [3, LARGE_SIZE, BLOCKED_SIZE])
def test_cholesky_inverse_check_grads(k):
    rng = np.random.default_rng(110 + k)
    with jax.enable_x64(True):
        a = jnp.asarray(rng.standard_normal((k, k)))
        check_grads(lambda m: cholesky_inverse(spd_from(m)), (a,), order=2, modes=("fwd", "rev"), **GRAD_TOL)


@pytest.mark.parametrize("k", [3, LARGE_SIZE, BLOCKED_SIZE])
def test_leading_logdets_check_grads(k):
    rng = np.random.default_rng(120 + k)
    cuts = (0, 1, k // 2 + 1, k)
    with jax.enable_x64(True):
        a = jnp.asarray(rng.standard_normal((k, k)))
        check_grads(lambda m: leading_logdets(spd_from(m), cuts), (a,), order=2, modes=("fwd", "rev"), **GRAD_TOL)
