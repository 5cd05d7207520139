"""Property test: jaxmm's blocked deviance and PLS solution equal a naive dense computation.

The reference builds Z (n x q) by one-hot encoding each term's grouping factor straight from the
data frame, Lambda = blockdiag(I_m kron lambda_t), V = Z Lambda Lambda' Z' + I, and evaluates the
profiled ML deviance / REML criterion from GLS, in plain numpy: it shares no algebra with jaxmm.

Random designs have a fixed shape per formula (n, numbers of levels, and every (g, h) cell
present), so the JAX functions compile once per formula; the layout of the extra rows, the labels'
order, the covariates, the response and theta vary with the seed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import cho_factor, cho_solve

import jaxmm.design as design_module
from jaxmm.design import build_design, suffstats
from jaxmm.deviance import factorize, objective, solve_pls

N, MG, MH = 120, 14, 6

# name -> (formula, expected terms in jaxmm's order: (group, columns, correlated))
CASES = {
    "scalar": ("y ~ 1 + x + (1 | g)", [("g", ("(Intercept)",), True)]),
    "vector": ("y ~ 1 + x + (1 + x | g)", [("g", ("(Intercept)", "x"), True)]),
    "zerocorr": ("y ~ 1 + x + zerocorr(1 + x | g)", [("g", ("(Intercept)", "x"), False)]),
    "crossed": (
        "y ~ 1 + x + c + (1 | h) + (1 | g)",
        [("g", ("(Intercept)",), True), ("h", ("(Intercept)",), True)],
    ),
    "nested": ("y ~ 1 + x + (1 | g/h)", [("g:h", ("(Intercept)",), True), ("g", ("(Intercept)",), True)]),
    "crossed_vector_second": (
        "y ~ 1 + x + (1 | g) + (1 + x | h)",
        [("g", ("(Intercept)",), True), ("h", ("(Intercept)", "x"), True)],
    ),
    "crossed_vector_first": (
        "y ~ 1 + x + (1 | h) + (1 + x + z | g)",
        [("g", ("(Intercept)", "x", "z"), True), ("h", ("(Intercept)",), True)],
    ),
}


def random_frame(seed: int) -> pd.DataFrame:
    """N rows; every (g, h) cell at least once; labels whose sorted order differs from their codes."""
    rng = np.random.default_rng(seed)
    extra = N - MG * MH
    g = np.concatenate([np.repeat(np.arange(MG), MH), rng.integers(0, MG, extra)])
    h = np.concatenate([np.tile(np.arange(MH), MG), rng.integers(0, MH, extra)])
    perm = rng.permutation(N)
    g, h = g[perm], h[perm]
    g_names = np.array([f"G{i}" for i in rng.permutation(MG)])  # 'G10' sorts before 'G2'
    h_names = np.array([f"h{i}" for i in rng.permutation(MH)])
    x = rng.normal(size=N) * rng.uniform(0.5, 2.0)
    z = rng.uniform(-1.0, 1.0, size=N)
    c = rng.permutation(np.arange(N) % 3)
    y = (
        5.0
        + 2.0 * x
        + rng.normal(size=MG)[g] * rng.uniform(0.1, 3.0)
        + rng.normal(size=MG)[g] * x * rng.uniform(0.0, 1.0)
        + rng.normal(size=MH)[h] * rng.uniform(0.1, 3.0)
        + np.array([0.0, 1.0, -0.5])[c]
        + rng.normal(size=N) * rng.uniform(0.3, 2.0)
    )
    return pd.DataFrame({"y": y, "x": x, "z": z, "c": np.array(list("PQR"))[c], "g": g_names[g], "h": h_names[h]})


def lower_pattern(k: int, correlated: bool) -> list[tuple[int, int]]:
    """Positions of theta's elements in lambda_t: lower triangle column by column (lme4's order)."""
    return [(r, c) for c in range(k) for r in range(c, k) if correlated or r == c]


def random_theta(rng: np.random.Generator, terms) -> np.ndarray:
    return np.concatenate(
        [
            [rng.uniform(0.05, 3.0) if r == c else rng.uniform(-1.0, 1.0) for r, c in lower_pattern(len(cols), corr)]
            for _, cols, corr in terms
        ]
    )


def row_labels(df: pd.DataFrame, group: str) -> list[str]:
    """Each row's level of the grouping factor 'a' or interaction 'a:b', as 'label_a:label_b'."""
    return [":".join(map(str, values)) for values in zip(*(df[col] for col in group.split(":")))]


def dense_reference(df: pd.DataFrame, level_labels, terms, theta: np.ndarray, X: np.ndarray):
    """ML deviance, REML criterion, GLS beta and the conditional modes b (per term, levels x k)."""
    n = len(df)
    y = df["y"].to_numpy(float)
    zs, lams, offset = [], [], 0
    for (group, columns, correlated), labels in zip(terms, level_labels):
        index = {label: j for j, label in enumerate(labels)}
        ref = np.array([index[label] for label in row_labels(df, group)])
        k, m = len(columns), len(labels)
        values = np.column_stack([np.ones(n) if c == "(Intercept)" else df[c].to_numpy(float) for c in columns])
        z = np.zeros((n, m * k))
        for col in range(k):
            z[np.arange(n), ref * k + col] = values[:, col]
        pattern = lower_pattern(k, correlated)
        lam = np.zeros((k, k))
        for (r, c), value in zip(pattern, theta[offset : offset + len(pattern)]):
            lam[r, c] = value
        offset += len(pattern)
        zs.append(z)
        lams.append(np.kron(np.eye(m), lam))
    assert offset == len(theta)
    Z = np.hstack(zs)
    q = Z.shape[1]
    Lam = np.zeros((q, q))
    start = 0
    for block in lams:
        Lam[start : start + len(block), start : start + len(block)] = block
        start += len(block)
    ZL = Z @ Lam
    V = ZL @ ZL.T + np.eye(n)
    # V is symmetric positive definite: solve with its Cholesky factor (numpy's LU solve is
    # needlessly slow for many small systems on a busy machine, as OpenBLAS threads it)
    chol_v = cho_factor(V, lower=True)
    Vinv_X = cho_solve(chol_v, X)
    XtVX = X.T @ Vinv_X
    beta = cho_solve(cho_factor(XtVX), Vinv_X.T @ y)
    r = y - X @ beta
    Vinv_r = cho_solve(chol_v, r)
    rss = r @ Vinv_r
    logdet_v = np.linalg.slogdet(V)[1]
    p = X.shape[1]
    ml = n * np.log(2 * np.pi * rss / n) + logdet_v + n
    reml = (n - p) * (1 + np.log(2 * np.pi * rss / (n - p))) + logdet_v + np.linalg.slogdet(XtVX)[1]
    b = Lam @ Lam.T @ Z.T @ Vinv_r
    b_terms, start = [], 0
    for (_group, columns, _), labels in zip(terms, level_labels):
        size = len(labels) * len(columns)
        b_terms.append(b[start : start + size].reshape(len(labels), len(columns)))
        start += size
    return ml, reml, beta, b_terms


@partial(jax.jit, static_argnames="structure")
def jax_evaluate(theta, blocks, matrices, y, structure):
    stats = suffstats(matrices, structure, y)
    ml = objective(theta, blocks, stats, structure, False)
    reml = objective(theta, blocks, stats, structure, True)
    solution = solve_pls(factorize(theta, blocks, stats, structure), theta, blocks, stats, structure)
    return ml, reml, solution


def lambda_t(theta_t: np.ndarray, term) -> np.ndarray:
    lam = np.zeros((term.k, term.k))
    lam[list(term.theta_rows), list(term.theta_cols)] = theta_t
    return lam


def _close(actual, expected, rtol=1e-8):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(np.max(np.abs(expected)), 1e-300)
    assert np.max(np.abs(actual - expected)) <= rtol * scale, (actual, expected)


@pytest.mark.parametrize("z1zr", ["dense", "sparse"])
@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_blocked_deviance_matches_dense(case, z1zr, seed):
    """Both forms of Z1'Zr (design.Blocks), each forced by the cost of a scattered multiply-add."""
    formula, terms = CASES[case]
    df = random_frame(seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(design_module, "SCATTER_COST", 10**9 if z1zr == "dense" else 0)
        design = build_design(formula, df)
    structure = design.structure
    assert design.blocks.dense_z1zr == (z1zr == "dense" and len(structure.terms) > 1)

    # the structure is the one the formula describes, in decreasing order of random effects
    assert [(t.group, t.columns) for t in structure.terms] == [(g, cols) for g, cols, _ in terms]
    for t, (_, cols, corr) in zip(structure.terms, terms):
        assert list(zip(t.theta_rows, t.theta_cols)) == lower_pattern(len(cols), corr)
    assert [t.nranef for t in structure.terms] == sorted((t.nranef for t in structure.terms), reverse=True)
    # the level labels are exactly the observed groups
    for (group, _, _), labels, t in zip(terms, design.levels, structure.terms):
        observed = set(row_labels(df, group))
        assert len(labels) == t.nlevels == len(observed) and set(labels) == observed

    X = np.asarray(design.x)
    np.testing.assert_array_equal(X[:, 0], 1.0)
    np.testing.assert_array_equal(X[:, 1], df["x"].to_numpy())
    np.testing.assert_array_equal(design.y, df["y"].to_numpy())

    theta = random_theta(np.random.default_rng([seed, 1]), terms)
    ml_ref, reml_ref, beta_ref, b_ref = dense_reference(df, design.levels, terms, theta, X)

    with jax.enable_x64(True):
        blocks = jax.tree.map(jnp.asarray, design.blocks)
        matrices = jax.tree.map(jnp.asarray, design.matrices)
        ml, reml, sol = jax_evaluate(jnp.asarray(theta), blocks, matrices, jnp.asarray(design.y), structure)
        assert ml.dtype == jnp.float64

    # the blocks are of the standardised X_s = X A^-1: the same ML criterion, REML's shifted by 2 log|det A|
    reml_shift = 2.0 * np.linalg.slogdet(design.beta_scaling)[1]
    assert abs(float(ml) - ml_ref) <= 1e-8 * abs(ml_ref)
    assert abs(float(reml) + reml_shift - reml_ref) <= 1e-8 * abs(reml_ref)

    # PLS solution: beta-hat is the GLS estimate (of X_s: A beta), b = Lambda u the conditional modes
    _close(design.from_fit_beta(np.asarray(sol.beta)), beta_ref)
    offsets = np.cumsum([0] + [t.ntheta for t in structure.terms])
    lams = [lambda_t(theta[lo:hi], t) for lo, hi, t in zip(offsets[:-1], offsets[1:], structure.terms)]
    u1 = np.asarray(sol.u1)
    assert u1.shape == (structure.terms[0].nlevels, structure.terms[0].k)
    _close(u1 @ lams[0].T, b_ref[0])
    ur, start = np.asarray(sol.ur), 0
    assert ur.shape == (structure.qrest,)
    for t, lam, b_t in zip(structure.terms[1:], lams[1:], b_ref[1:]):
        _close(ur[start : start + t.nranef].reshape(t.nlevels, t.k) @ lam.T, b_t)
        start += t.nranef


def test_reference_reduces_to_known_values():
    """Sanity check of the dense reference itself: with theta = 0, V = I and it is OLS."""
    df = random_frame(7)
    formula, terms = CASES["crossed"]
    design = build_design(formula, df)
    X = np.asarray(design.x)
    ml, reml, beta, b = dense_reference(df, design.levels, terms, np.zeros(2), X)
    y = df["y"].to_numpy()
    beta_ols, rss = np.linalg.lstsq(X, y, rcond=None)[:2]
    n, p = X.shape
    np.testing.assert_allclose(beta, beta_ols, rtol=1e-10)
    assert ml == pytest.approx(n * (1 + np.log(2 * np.pi * rss[0] / n)), rel=1e-12)
    assert reml == pytest.approx(
        (n - p) * (1 + np.log(2 * np.pi * rss[0] / (n - p))) + np.linalg.slogdet(X.T @ X)[1], rel=1e-12
    )
    assert all(np.all(bt == 0) for bt in b)
