"""The parametric bootstrap of a generalized linear mixed model (cbpp, binomial): the simulated
responses' distribution, agreement with standalone fits, reproducibility, tables and files.

Compilation dominates: the model and its bootstrap kernel compile once (module fixtures, every
bootstrap of the same nsamp-independent lane shape); the rest reuses them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _helpers import assert_restores, same
from scipy.special import expit

import jaxmm
from jaxmm.bootstrap import replicate_key, simulated_responses
from jaxmm.glmm.family import family
from jaxmm.glmm.laplace import glmm_data
from jaxmm.glmm.model import simulate_glmm_response
from jaxmm.results import MixedModelBootstrap

CBPP = "prop ~ 1 + period + (1|herd)"
SEED = 5
NSAMP = 40


def _cbpp() -> pd.DataFrame:
    d = jaxmm.dataset("cbpp")
    return d.assign(prop=d["incidence"] / d["size"])


@pytest.fixture(scope="module")
def cbpp():
    return jaxmm.fit(CBPP, _cbpp(), family="binomial", weights="size")


@pytest.fixture(scope="module")
def samp(cbpp):
    return jaxmm.parametricbootstrap(SEED, NSAMP, cbpp, progress=False)


def _herd_expectation(cbpp, f) -> np.ndarray:
    """E[f(mu_i)] over u ~ N(0, 1), mu_i = expit(x_i beta + theta u_herd(i)), by Gauss-Hermite."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    eta = np.asarray(cbpp.design.x) @ cbpp.beta.to_numpy()
    mu = expit(eta[:, None] + cbpp.theta[0] * nodes[None, :])
    return f(mu) @ weights / weights.sum()


# ---- the simulated responses ------------------------------------------------------------------------
def test_simulated_responses_support_mean_and_variance(cbpp):
    """Binomial successes y m are integers in [0, m]; each observation's mean and variance are
    E[mu] and E[mu (1 - mu)] / m + Var(mu) over the herd effect (a few standard errors)."""
    nsim = 4000
    ys = simulated_responses(cbpp, SEED, nsim)
    size = cbpp.design.weights
    successes = ys * size
    assert np.all(np.abs(successes - np.round(successes)) < 1e-9)
    assert successes.min() >= 0 and np.all(successes <= size)
    mean = _herd_expectation(cbpp, lambda mu: mu)
    z = (ys.mean(axis=0) - mean) / (ys.std(axis=0) / np.sqrt(nsim))
    assert np.max(np.abs(z)) < 4.5
    # with the random effects left out the means are off by far more
    fixed = expit(np.asarray(cbpp.design.x) @ cbpp.beta.to_numpy())
    assert np.max(np.abs((ys.mean(axis=0) - fixed) / (ys.std(axis=0) / np.sqrt(nsim)))) > 6
    variance = (
        _herd_expectation(cbpp, lambda mu: mu * (1 - mu)) / size + _herd_expectation(cbpp, lambda mu: mu**2) - mean**2
    )
    # the sample variance of 4000 draws is within about 5% of the variance
    assert np.max(np.abs(ys.var(axis=0) / variance - 1)) < 0.2
    assert np.median(np.abs(ys.var(axis=0) / variance - 1)) < 0.06


@pytest.mark.parametrize("name", ["bernoulli", "binomial", "poisson"])
def test_family_sample(name):
    mu = np.array([0.05, 0.3, 0.5, 0.9]) * (10.0 if name == "poisson" else 1.0)
    trials = np.array([1.0, 3.0, 7.0, 20.0]) if name == "binomial" else np.ones(4)
    fam = family(name)
    nsim = 20000
    with jax.enable_x64(True):
        keys = jax.vmap(lambda i: replicate_key(jax.random.key(0), i))(jnp.arange(nsim))
        y = np.asarray(jax.vmap(lambda k: fam.sample(k, jnp.asarray(mu), jnp.asarray(trials)))(keys))
    counts = y * trials
    assert y.dtype == np.float64 and np.all(np.abs(counts - np.round(counts)) < 1e-9) and counts.min() >= 0
    if name != "poisson":
        assert np.all(counts <= trials)
    variance = mu if name == "poisson" else mu * (1 - mu) / trials
    z = (y.mean(axis=0) - mu) / np.sqrt(variance / nsim)
    assert np.max(np.abs(z)) < 4.5
    assert np.max(np.abs(y.var(axis=0) / variance - 1)) < 0.1


def test_use_u_simulates_around_the_fitted_means(cbpp):
    """With u held at the fitted modes, E[y_i] = mu-hat_i = m.fitted()."""
    nsim = 4000
    with jax.enable_x64(True):
        data = jax.tree.map(jnp.asarray, glmm_data(cbpp.design))
        u = jnp.concatenate([jnp.asarray(u_t).reshape(-1) for u_t in cbpp._state.u])
        # the kernels work in the standardised X_s of glmm_data: its coefficients are A beta
        beta, theta = jnp.asarray(cbpp.design.to_fit_beta(cbpp.beta.to_numpy())), jnp.asarray(cbpp.theta)
        one = lambda i: simulate_glmm_response(
            replicate_key(jax.random.key(1), i), data, cbpp.structure, cbpp.family, beta, theta, u
        )
        ys = np.asarray(jax.jit(jax.vmap(one))(jnp.arange(nsim)))
    mu = cbpp.fitted()
    z = (ys.mean(axis=0) - mu) / np.sqrt(mu * (1 - mu) / cbpp.design.weights / nsim)
    assert np.max(np.abs(z)) < 4.5


# ---- the refits ----------------------------------------------------------------------------------------
def test_replicates_match_standalone_fits(cbpp, samp):
    assert samp.converged.all() and np.all(np.isfinite(samp.objective))
    # the first three, and the first singular one (theta exactly 0: MixedModels.jl's polish)
    singular = int(np.flatnonzero(samp.theta[:, 0] == 0.0)[0])
    ys = simulated_responses(cbpp, SEED, singular + 1)
    for i in (0, 1, 2, singular):
        y = ys[i]
        alone = jaxmm.fit(CBPP, _cbpp().assign(prop=y), family="binomial", weights="size")
        r = samp.replicates
        assert abs(r.objective[i] - alone.objective) <= 1e-9 * alone.objective
        np.testing.assert_allclose(r.theta[i], alone.theta, atol=1e-5)
        np.testing.assert_allclose(r.beta[i], alone.beta.to_numpy(), atol=1e-4)
        # the replicate's se is lme4's vcov(use.hessian = FALSE); alone's is from the exact Hessian
        np.testing.assert_allclose(r.se[i], alone.stderror.to_numpy(), rtol=0.05)
    # a bootstrap's spread is the sampling spread the standard errors estimate
    np.testing.assert_allclose(np.std(r.beta, axis=0), cbpp.stderror.to_numpy(), rtol=0.35)


def test_fast_model_is_refitted_fast():
    """A fast=True model's replicates are fast=True fits (theta alone, beta from PIRLS)."""
    m = jaxmm.fit(CBPP, _cbpp(), family="binomial", weights="size", fast=True)
    fast = jaxmm.parametricbootstrap(SEED, 8, m, progress=False)
    assert fast.converged.all()
    for i, y in enumerate(simulated_responses(m, SEED, 2)):
        alone = jaxmm.fit(CBPP, _cbpp().assign(prop=y), family="binomial", weights="size", fast=True)
        assert abs(fast.objective[i] - alone.objective) <= 1e-9 * alone.objective
        np.testing.assert_allclose(fast.theta[i], alone.theta, atol=1e-6)
        np.testing.assert_allclose(fast.replicates.beta[i], alone.beta.to_numpy(), atol=1e-6)
        np.testing.assert_allclose(fast.replicates.se[i], alone.stderror.to_numpy(), rtol=1e-6)


def test_batch_size_and_nsamp_do_not_change_results(cbpp, samp):
    wide = jaxmm.parametricbootstrap(SEED, NSAMP, cbpp, progress=False, batch_size=64)
    short = jaxmm.parametricbootstrap(SEED, 10, cbpp, progress=False)
    for name in ("objective", "beta", "se", "sigma", "theta", "converged", "niter"):
        assert same(getattr(wide.replicates, name), getattr(samp.replicates, name)), name
        assert same(getattr(short.replicates, name), getattr(samp.replicates, name)[:10]), name
    other = jaxmm.parametricbootstrap(SEED + 1, 10, cbpp, progress=False)
    assert not np.any(other.objective == samp.objective[:10])


# ---- tables ----------------------------------------------------------------------------------------------
def test_tables_have_no_residual_sigma(samp):
    tbl = samp.tbl
    assert list(tbl.columns) == ["obj", "β1", "β2", "β3", "β4", "σ1", "θ1"]
    assert same(tbl["σ1"], samp.theta[:, 0])  # sd of the herd effect = theta (no residual scale)
    assert list(samp.confint()["par"]) == ["β1", "β2", "β3", "β4", "σ1"]
    lo, hi = np.nanquantile(samp.theta[:, 0], [0.025, 0.975])
    assert samp.confint(method="equaltail").iloc[-1][["lower", "upper"]].tolist() == [lo, hi]
    intervals = samp.shortestcovint()
    assert list(intervals["type"]) == ["β"] * 4 + ["σ"] and intervals["group"].iloc[-1] == "herd"
    assert len(samp.allpars) == 5 * NSAMP and "σ" not in samp.fits.columns
    assert same(samp.issingular(), samp.theta[:, 0] == 0.0)
    assert np.all(samp.issingular(atol=1.0)) and 0 < samp.issingular().sum() < NSAMP  # seed 5: 2 singular fits


def test_sigma_and_statistic_are_errors(cbpp):
    with pytest.raises(
        ValueError, match="sigma applies to families with a dispersion parameter; family 'binomial' has none"
    ):
        jaxmm.parametricbootstrap(1, 4, cbpp, sigma=1.0, progress=False)
    with pytest.raises(ValueError, match="statistic applies to linear mixed models"):
        jaxmm.parametricbootstrap(1, 4, cbpp, statistic=lambda r: r.beta, progress=False)
    with pytest.raises(ValueError, match="theta cannot be given with use_u=True"):
        jaxmm.parametricbootstrap(1, 4, cbpp, theta=[0.5], use_u=True, progress=False)
    with pytest.raises(ValueError, match="beta must hold 4 finite values"):
        jaxmm.parametricbootstrap(1, 4, cbpp, beta=[1.0, 2.0], progress=False)
    with pytest.raises(ValueError, match="precision 'float32' applies to linear mixed models"):
        jaxmm.parametricbootstrap(1, 4, cbpp, precision="float32", progress=False)


def test_replicates_are_refitted_with_the_models_nagq():
    """A model fitted by adaptive quadrature is bootstrapped by it: replicate 0 equals a standalone
    nAGQ = 9 fit of its response, and not the Laplace fit (which differs by about 1e-3 here)."""
    m9 = jaxmm.fit(CBPP, _cbpp(), family="binomial", weights="size", nAGQ=9)
    r = jaxmm.parametricbootstrap(SEED, 2, m9, progress=False).replicates
    y = simulated_responses(m9, SEED, 1)[0]
    alone = jaxmm.fit(CBPP, _cbpp().assign(prop=y), family="binomial", weights="size", nAGQ=9)
    laplace = jaxmm.fit(CBPP, _cbpp().assign(prop=y), family="binomial", weights="size")
    assert abs(r.objective[0] - alone.objective) <= 1e-9 * alone.objective
    assert abs(r.objective[0] - laplace.objective) > 1e-5 * laplace.objective
    np.testing.assert_allclose(r.theta[0], alone.theta, atol=1e-5)


# ---- combining and files -------------------------------------------------------------------------------
def test_vcat_save_restore(tmp_path, cbpp, samp):
    other = jaxmm.parametricbootstrap(SEED + 1, 10, cbpp, progress=False)
    both = jaxmm.vcat(samp, other)
    pd.testing.assert_frame_equal(both.tbl, pd.concat([samp.tbl, other.tbl], ignore_index=True), check_exact=True)
    path = tmp_path / "cbpp.parquet"
    assert_restores(samp, cbpp, path)
    # a linear mixed model of the same formula and data is another model (fitted or not)
    lmm = jaxmm.LinearMixedModel(CBPP, _cbpp())
    with pytest.raises(
        ValueError, match=r"different models: their family differ \('binomial \(logit\)' vs 'gaussian'\)"
    ):
        jaxmm.vcat(samp, MixedModelBootstrap(lmm, samp.replicates))
    with pytest.raises(
        ValueError, match=r"another model: its family is 'binomial \(logit\)', the model's is 'gaussian'"
    ):
        jaxmm.restorereplicates(path, lmm)
