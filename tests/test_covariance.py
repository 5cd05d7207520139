"""covariance.py on its own: theta -> lambda_t and Lambda against dense references built by hand,
the bounds and sign map of theta, and variance components against numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmm import covariance
from jaxmm.covariance import TermSpec


def term(group: str, k: int, correlated: bool, nlevels: int = 3) -> TermSpec:
    pattern = covariance.theta_pattern(k, correlated)
    return TermSpec(group, tuple(f"c{i}" for i in range(k)), nlevels, *map(tuple, zip(*pattern)))


TERMS = (term("g", 3, True, 4), term("h", 2, False, 3), term("i", 1, True, 5))


def dense_lambda(theta: np.ndarray, terms) -> list[np.ndarray]:
    """lambda_t filled element by element from theta, column by column down the lower triangle."""
    out, i = [], 0
    for t in terms:
        lam = np.zeros((t.k, t.k))
        for c in range(t.k):
            for r in range(c, t.k):
                if r == c or t.correlated:
                    lam[r, c] = theta[i]
                    i += 1
        out.append(lam)
    return out


def test_theta_pattern_is_lme4s_column_major_lower_triangle():
    assert covariance.theta_pattern(3, True) == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2)]
    assert covariance.theta_pattern(3, False) == [(0, 0), (1, 1), (2, 2)]


def test_bounds_start_and_column_map():
    assert [t.ntheta for t in TERMS] == [6, 2, 1]
    lb = covariance.lowerbd(TERMS)
    np.testing.assert_array_equal(lb, [0, -np.inf, -np.inf, 0, -np.inf, 0, 0, 0, 0])
    np.testing.assert_array_equal(covariance.initial_theta(TERMS), [1, 0, 0, 1, 0, 1, 1, 1, 1])
    # each component -> the theta index of its column's diagonal element
    np.testing.assert_array_equal(covariance.column_diag(TERMS), [0, 0, 0, 3, 3, 5, 6, 7, 8])


# no subnormals: XLA CPU flushes them to zero in products
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(-3, 3, allow_subnormal=False), min_size=9, max_size=9))
def test_lambdas_and_lambda_products_match_dense_references(values):
    theta = np.asarray(values)
    with jax.enable_x64(True):
        lams = covariance.lambdas(jnp.asarray(theta), TERMS)
        for got, want in zip(lams, dense_lambda(theta, TERMS)):
            np.testing.assert_array_equal(got, want)
        big_lambda = np.zeros((sum(t.nranef for t in TERMS),) * 2)
        offset = 0
        for t, lam in zip(TERMS, dense_lambda(theta, TERMS)):
            big_lambda[offset : offset + t.nranef, offset : offset + t.nranef] = np.kron(np.eye(t.nlevels), lam)
            offset += t.nranef
        m = np.random.default_rng(0).normal(size=(2, big_lambda.shape[0]))
        got = covariance.rmul_lambda(jnp.asarray(m), lams, TERMS)
        np.testing.assert_allclose(got, m @ big_lambda, rtol=1e-13, atol=1e-300)  # products below 1e-300 may flush


def test_covariances_sd_and_correlations_against_numpy():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(4, 9))
    theta[2, :6] = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # columns 2 and 3 of term g have sd 0: correlation undefined
    scale = np.array([1.0, 2.0, 0.5, 3.0])
    covs = covariance.covariances(theta, scale, TERMS)
    for n in range(4):
        for lam, cov in zip(dense_lambda(theta[n], TERMS), covs):
            np.testing.assert_allclose(cov[n], scale[n] ** 2 * lam @ lam.T, rtol=1e-14)
    sd, rho = covariance.sd_corr(covs[0])
    want = covs[0][1] / np.sqrt(np.outer(np.diag(covs[0][1]), np.diag(covs[0][1])))
    np.testing.assert_allclose(sd[1], np.sqrt(np.diag(covs[0][1])), rtol=1e-14)
    assert sorted(rho) == [(0, 1), (0, 2), (1, 2)]
    np.testing.assert_allclose([rho[0, 1][1], rho[0, 2][1], rho[1, 2][1]], [want[0, 1], want[0, 2], want[1, 2]])
    assert all(np.isnan(r[2]) for r in rho.values())


def test_covariance_pattern_names_the_free_covariances():
    corr, zero = term("g", 2, True), term("g", 2, False)
    assert covariance.covariance_pattern(corr) == {("c0", "c0"), ("c0", "c1"), ("c1", "c0"), ("c1", "c1")}
    assert covariance.covariance_pattern(zero) == {("c0", "c0"), ("c1", "c1")}
    assert corr.correlated and not zero.correlated


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lambda_has_the_deviance_symmetry_the_solver_relies_on(k):
    """Flipping the sign of a column of lambda_t (canonical_signs) leaves lambda_t lambda_t' unchanged."""
    from jaxmm.solver import canonical_signs

    t = term("g", k, True)
    theta = np.random.default_rng(k).normal(size=t.ntheta)
    theta[covariance.column_diag((t,))[0]] = -abs(theta[0])
    with jax.enable_x64(True):
        flipped = canonical_signs(jnp.asarray(theta), covariance.column_diag((t,)))
        assert np.all(np.asarray(flipped)[covariance.lowerbd((t,)) == 0] >= 0)
    a = covariance.covariances(theta[None], np.ones(1), (t,))[0]
    b = covariance.covariances(np.asarray(flipped)[None], np.ones(1), (t,))[0]
    np.testing.assert_allclose(a, b, rtol=1e-14)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 4), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_lower_factor_is_the_lq_factor_of_the_same_rank(k, deficiency, seed):
    """L lower triangular, diagonal >= 0, L L' = m m' (against numpy), and exactly `deficiency`
    zero diagonal elements for m of rank k - deficiency, at any scale of m's rows."""
    deficiency = min(deficiency, k - 1)
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(k, k - deficiency)) @ rng.normal(size=(k - deficiency, k))
    m *= 10.0 ** rng.uniform(-6, 9, size=(k, 1))
    with jax.enable_x64(True):
        factor = np.asarray(covariance.lower_factor(jnp.asarray(m), deficiency))
    assert np.all(np.triu(factor, 1) == 0) and np.all(np.diagonal(factor) >= 0)
    assert np.count_nonzero(np.diagonal(factor) == 0) == deficiency
    scale = np.outer(np.linalg.norm(m, axis=1), np.linalg.norm(m, axis=1))
    assert np.max(np.abs(factor @ factor.T - m @ m.T) / scale) <= 1e-12


def test_transform_theta_keeps_a_triangular_factor_and_changes_origin_exactly():
    """A diagonal map scales lambda_t's rows elementwise (bit for bit); T = [[1, d], [0, 1]] (a slope's
    origin moved by d) gives the factor of T Sigma T', and back again."""
    terms = (term("g", 2, True), term("h", 1, True))
    theta = np.array([0.9, -0.3, 0.2, 1.5])
    scale = (np.diag([2.0, 0.5]), np.array([[4.0]]))
    shift, back = (np.array([[1.0, 1e6], [0.0, 1.0]]), np.eye(1)), (np.array([[1.0, -1e6], [0.0, 1.0]]), np.eye(1))
    with jax.enable_x64(True):
        scaled = np.asarray(covariance.transform_theta(jnp.asarray(theta), scale, terms))
        moved = covariance.transform_theta(jnp.asarray(theta), shift, terms)
        returned = np.asarray(covariance.transform_theta(moved, back, terms))
    np.testing.assert_array_equal(scaled, theta * np.array([2.0, 0.5, 0.5, 4.0]))
    lam, lam_moved = (np.array([[t[0], 0.0], [t[1], t[2]]]) for t in (theta, np.asarray(moved)))
    np.testing.assert_allclose(lam_moved @ lam_moved.T, shift[0] @ lam @ lam.T @ shift[0].T, rtol=1e-12)
    np.testing.assert_allclose(returned, theta, rtol=1e-9)
