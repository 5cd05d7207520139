"""Simulated responses drawn and summed a chunk of rows at a time (jaxmm.lmm: row_chunks, simulate_response,
response_stats), against references written out here in NumPy from the definition of the draws:

    chunk 0: [e_0; u] = normal(key, R + q);   chunk c > 0: e_c = normal(fold_in(key, c), R), row cR + j <- e_c[j]
    y = X beta + o + sigma (W^-1/2 e + Z Lambda u)

- a small model forced into several chunks (CHUNK_ROWS lowered; each function traced afresh here): the
  response and its sufficient statistics, for the model itself and for another model of the same rows
  (pblrt fits two), with prior weights, an offset and a last chunk that overlaps the one before;
- a model of 150,001 rows, two chunks as shipped: its bootstrap is bit-identical across batch sizes, each
  replicate's fit is the fit from scratch of its simulated response, and m.simulate draws replicate i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _helpers import same

import jaxmm
from jaxmm import lmm
from jaxmm._compile import computing
from jaxmm.bootstrap import simulated_responses

SS = "reaction ~ 1 + days + (1 + days|subj)"
SS_SMALL = "reaction ~ 1 + days + (1|subj)"


def test_row_chunks():
    assert lmm.row_chunks(180) == (1, 180)
    assert lmm.row_chunks(lmm.CHUNK_ROWS) == (1, lmm.CHUNK_ROWS)
    assert lmm.row_chunks(lmm.CHUNK_ROWS + 1) == (2, lmm.CHUNK_ROWS // 2 + 1)
    assert lmm.row_chunks(1_000_000) == (8, 125_000)


@pytest.fixture(scope="module")
def weighted():
    """sleepstudy with prior weights and an offset, and a smaller model of the same rows."""
    df = jaxmm.dataset("sleepstudy").assign(w=lambda d: 1.0 + d["days"] % 3, o=lambda d: 0.1 * d["days"])
    return jaxmm.fit(SS, df, weights="w", offset="o"), jaxmm.fit(SS_SMALL, df, weights="w", offset="o")


def _reference_response(m, sim, key, rows: int) -> np.ndarray:
    """y from the definition (module docstring), in the fit's units, for chunks of `rows` rows."""
    mats, n = m.design.matrices, m.structure.n
    q = sum(t.nranef for t in m.structure.terms)
    first = np.asarray(jax.random.normal(key, (rows + q,), jnp.float64))
    keys = [jax.random.fold_in(key, c) for c in range(1, -(-n // rows))]
    later = [np.asarray(jax.random.normal(k, (rows,), jnp.float64)) for k in keys]
    e = np.concatenate([first[:rows], *later])[:n]
    u = first[rows:].reshape(-1, 2)
    t = np.asarray(sim.theta)
    lam = np.array([[t[0], 0.0], [t[1], t[2]]])  # lme4's column-major lower triangle
    b = u @ lam.T
    refs, z = mats.refs[0], mats.z[0]
    sigma = float(sim.sigma)
    noise = e / np.sqrt(mats.weights) + np.sum(z * b[refs], axis=1)
    return mats.x @ np.asarray(sim.beta) + mats.offset + sigma * noise


def _reference_stats(m, r: np.ndarray) -> tuple:
    """Z1'Wr (levels x k), X'Wr, r'Wr of one-term model m."""
    mats = m.design.matrices
    wr = mats.weights * r
    t = m.structure.terms[0]
    z1 = np.stack([np.bincount(mats.refs[0], mats.z[0][:, j] * wr, t.nlevels) for j in range(t.k)], axis=1)
    return z1, mats.x.T @ wr, r @ wr


@pytest.mark.parametrize("chunk_rows", [26, 90, 180])  # 7 chunks (the last overlaps by 2 rows), 2, 1
def test_chunks_draw_the_defined_response_and_sum_its_statistics(weighted, monkeypatch, chunk_rows):
    m, small = weighted
    monkeypatch.setattr(lmm, "CHUNK_ROWS", chunk_rows)
    count, rows = lmm.row_chunks(m.structure.n)
    assert (count, count * rows - m.structure.n) == {26: (7, 2), 90: (2, 0), 180: (1, 0)}[chunk_rows]
    with computing():
        key = jax.random.key(17)
        sim = m.simulation(m.simulation_parameters(), use_u=False)
        draw = lmm.LmmDraw(key, sim, m.structure)
        y = np.asarray(jax.jit(lambda d: m.lanes().response(d))(draw))
        expected = _reference_response(m, sim, key, rows)
        np.testing.assert_allclose(y, expected, rtol=1e-13, atol=1e-11)
        for model in (m, small):
            centre = jnp.asarray(model.design.to_fit_beta(model.beta.to_numpy()))
            mats = jax.tree.map(jnp.asarray, model.design.matrices)
            stats = jax.jit(lambda d, mats, c, s=model.structure: lmm.response_stats(d, mats, s, c))(draw, mats, centre)
            r = expected - model.design.matrices.x @ np.asarray(centre) - model.design.offset
            z1, xr, rr = _reference_stats(model, r)
            np.testing.assert_allclose(np.asarray(stats.z1y), z1, rtol=1e-11, atol=1e-9)
            np.testing.assert_allclose(np.asarray(stats.xy), xr, rtol=1e-11, atol=1e-9)
            np.testing.assert_allclose(float(stats.yy), rr, rtol=1e-12)


def test_one_chunk_is_one_draw_of_n_plus_q(weighted):
    """At most CHUNK_ROWS rows: [e; u] = normal(key, n + q), the draw of every shipped example."""
    m, _ = weighted
    with computing():
        key = jax.random.key(3)
        sim = m.simulation(m.simulation_parameters(), use_u=False)
        y = np.asarray(lmm.simulate_response(key, sim.mats, m.structure, sim.beta, sim.sigma, sim.theta))
        np.testing.assert_allclose(y, _reference_response(m, sim, key, m.structure.n), rtol=1e-13, atol=1e-11)


N_LARGE = lmm.CHUNK_ROWS + 20_001  # two chunks; the second's window reaches back over the first's last rows
LARGE = "y ~ 1 + x + (1|g)"
LARGE_SEED = 8
LARGE_NSAMP = 12


@pytest.fixture(scope="module")
def large():
    rng = np.random.default_rng(5)
    g = rng.integers(0, 60, N_LARGE)
    x = rng.normal(size=N_LARGE)
    y = 2.0 + 0.3 * x + 0.7 * rng.normal(size=60)[g] + rng.normal(size=N_LARGE)
    df = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    return jaxmm.fit(LARGE, df), df


@pytest.fixture(scope="module")
def large_boot(large):
    m, _ = large
    return jaxmm.parametricbootstrap(LARGE_SEED, LARGE_NSAMP, m, progress=False)


def test_large_model_is_two_chunks(large):
    m, _ = large
    count, rows = lmm.row_chunks(m.structure.n)
    assert count == 2 and 0 < 2 * rows - m.structure.n < rows


def test_chunked_bootstrap_bit_identical_across_batch_sizes(large, large_boot):
    m, _ = large
    for batch in (1, 3 * LARGE_NSAMP):  # one call, and several
        other = jaxmm.parametricbootstrap(LARGE_SEED, LARGE_NSAMP, m, progress=False, batch_size=batch)
        assert same(other.tbl.to_numpy(), large_boot.tbl.to_numpy()), batch
        assert same(other.replicates.niter, large_boot.replicates.niter)


def test_chunked_replicates_are_fits_of_their_responses(large, large_boot):
    """Replicate i's fit is jaxmm.fit of simulated_responses' row i (drawn whole here), and m.simulate's
    column i is that response."""
    m, df = large
    ys = simulated_responses(m, LARGE_SEED, 3)
    np.testing.assert_allclose(m.simulate(3, seed=LARGE_SEED).to_numpy().T, ys, rtol=1e-10)
    r = large_boot.replicates
    for i, y in enumerate(ys):
        single = jaxmm.fit(LARGE, df.assign(y=y))
        np.testing.assert_allclose(r.objective[i], single.objective, rtol=1e-10)
        np.testing.assert_allclose(r.theta[i], single.theta, rtol=1e-4)
        np.testing.assert_allclose(r.beta[i], single.beta.to_numpy(), rtol=1e-6)
