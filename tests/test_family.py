"""Unit tests of the GLMM families (jaxmm.glmm.family: Family, family()) against scipy, in float64.

Deviances are compared with -2 times scipy.stats' log pmf (bernoulli, binomial with y the proportion of
successes out of the m trials given as weights, poisson) at mu from the inverse link computed with scipy
(expit, norm.cdf, 1 - exp(-exp(eta)) by numpy's expm1, exp); at |eta| = 30 with the log pmf written from scipy's
log-probabilities (log_expit, norm.logcdf / norm.logsf, a series for the cloglog). Fisher weights are compared
with the closed forms m (dmu/deta)^2 / V(mu) and with the expectation over y (an exact sum over the binomial
support) of the second derivative of d_i / 2 in eta, taken with jax.grad. Samples (vmapped over 4 keys) are
checked by their moments over 20,000 draws, their support and their dependence on the key alone; family() by
its defaults and errors; check_response by the supports it accepts and rejects; and the bernoulli logit deviance
by a hypothesis property: d(y=1) - d(y=0) = -2 eta.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmm.glmm.family import Family, family

PAIRS = [
    ("bernoulli", "logit"),
    ("bernoulli", "probit"),
    ("bernoulli", "cloglog"),
    ("binomial", "logit"),
    ("binomial", "probit"),
    ("binomial", "cloglog"),
    ("poisson", "log"),
]
BINOMIAL_LINKS = ["logit", "probit", "cloglog"]
ETA = np.array([-4.0, -2.5, -1.0, -0.3, 0.0, 0.4, 1.2, 2.0])
TRIALS = np.array([1.0, 3.0, 10.0])
COUNTS = np.array([0.0, 1.0, 2.0, 5.0, 17.0])


def scipy_mu(link: str, eta: np.ndarray) -> np.ndarray:
    """mu = g^-1(eta); the cloglog's 1 - exp(-exp(eta)) through expm1, exact to rounding for eta << 0."""
    if link == "logit":
        return scipy.special.expit(eta)
    if link == "probit":
        return scipy.stats.norm.cdf(eta)
    if link == "cloglog":
        return -np.expm1(-np.exp(eta))
    return np.exp(eta)


def scipy_one_minus_mu(link: str, eta: np.ndarray) -> np.ndarray:
    """1 - mu for the binomial links, without the cancellation of 1 - mu where mu is near 1."""
    if link == "logit":
        return scipy.special.expit(-eta)
    if link == "probit":
        return scipy.stats.norm.sf(eta)
    return np.exp(-np.exp(eta))


def scipy_log_mu(link: str, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log mu and log(1 - mu) for the binomial links, accurate for large |eta|."""
    if link == "logit":
        return scipy.special.log_expit(eta), scipy.special.log_expit(-eta)
    if link == "probit":
        return scipy.stats.norm.logcdf(eta), scipy.stats.norm.logsf(eta)
    x = np.exp(eta)
    # log(1 - exp(-x)) = log x + log((1 - exp(-x)) / x): a series for small x, direct for large x
    small = eta + np.log1p(-x / 2 + x**2 / 6 - x**3 / 24 + x**4 / 120)
    large = np.log1p(-np.exp(-x))
    return np.where(x < 1e-3, small, large), -x


def grid(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every combination of eta in ETA with the family's (y, m): returns eta, y, weights, and the integer
    responses (successes or counts)."""
    if name == "bernoulli":
        cases = [(1.0, 0.0), (1.0, 1.0)]
    elif name == "binomial":
        cases = [(m, s) for m in TRIALS for s in range(int(m) + 1)]
    else:
        cases = [(1.0, c) for c in COUNTS]
    m = np.array([c[0] for c in cases])
    k = np.array([c[1] for c in cases])
    eta = np.repeat(ETA, len(cases))
    m, k = np.tile(m, len(ETA)), np.tile(k, len(ETA))
    y = k if name == "poisson" else k / m
    return eta, y, m, k


def scipy_deviance(name: str, link: str, eta: np.ndarray, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    mu = scipy_mu(link, eta)
    if name == "bernoulli":
        return -2.0 * scipy.stats.bernoulli.logpmf(k, mu)
    if name == "binomial":
        return -2.0 * scipy.stats.binom.logpmf(k, m, mu)
    return -2.0 * scipy.stats.poisson.logpmf(k, mu)


N_EVAL = 160  # evaluate() pads every input to this length, so that each family and link compiles once


@partial(jax.jit, static_argnums=0)
def _evaluate_padded(fam: Family, y: jax.Array, m: jax.Array, eta: jax.Array):
    return fam.deviance(y, m, eta), fam.inverse_link(eta), fam.fisher_weights(m, eta)


def evaluate(fam: Family, eta: np.ndarray, y: np.ndarray | None = None, m: np.ndarray | None = None):
    """(deviance, inverse_link, fisher_weights) of `fam` at eta (y = 0 and m = 1 unless given), in float64."""
    n = eta.size
    assert n <= N_EVAL
    y = np.zeros(n) if y is None else y
    m = np.ones(n) if m is None else m
    padded = [np.concatenate([v, np.full(N_EVAL - n, fill)]) for v, fill in ((y, 0.0), (m, 1.0), (eta, 0.0))]
    with jax.enable_x64(True):
        out = _evaluate_padded(fam, *map(jnp.asarray, padded))
    assert all(o.dtype == jnp.float64 for o in out)
    return tuple(np.asarray(o)[:n] for o in out)


@pytest.mark.parametrize(("name", "link"), PAIRS)
def test_deviance_equals_minus_twice_scipy_log_pmf(name, link):
    eta, y, m, k = grid(name)
    dev = evaluate(family(name, link), eta, y, m)[0]
    assert dev.shape == eta.shape
    np.testing.assert_allclose(dev, scipy_deviance(name, link, eta, m, k), rtol=1e-10, atol=1e-12)


# (weights, successes or counts) at eta = -30, -30, -30, 30, 30, 30
LARGE_ETA_CASES = {
    "bernoulli": ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
    "binomial": ([1.0, 4.0, 5.0, 1.0, 4.0, 5.0], [0.0, 4.0, 2.0, 1.0, 0.0, 3.0]),
    "poisson": ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 4.0, 0.0, 3.0, 1e13]),
}


@pytest.mark.parametrize(("name", "link"), PAIRS)
def test_deviance_stays_finite_and_exact_at_large_eta(name, link):
    eta = np.array([-30.0, -30.0, -30.0, 30.0, 30.0, 30.0])
    m, k = (np.array(v) for v in LARGE_ETA_CASES[name])
    if name == "poisson":
        y = k
        expected = -2.0 * scipy.stats.poisson.logpmf(k, np.exp(eta))
    else:
        y = k / m
        log_mu, log1m_mu = scipy_log_mu(link, eta)
        log_choose = scipy.special.gammaln(m + 1) - scipy.special.gammaln(k + 1) - scipy.special.gammaln(m - k + 1)
        loglik = log_choose + np.where(k > 0, k * log_mu, 0.0) + np.where(m - k > 0, (m - k) * log1m_mu, 0.0)
        expected = -2.0 * loglik
    dev = evaluate(family(name, link), eta, y, m)[0]
    assert np.all(np.isfinite(expected))
    assert np.all(np.isfinite(dev))
    np.testing.assert_allclose(dev, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("name", "link"), PAIRS)
def test_inverse_link_matches_scipy(name, link):
    eta = np.concatenate([ETA, [-30.0, -8.0, 8.0, 30.0]])
    mu = evaluate(family(name, link), eta)[1]
    np.testing.assert_allclose(mu, scipy_mu(link, eta), rtol=1e-12, atol=0.0)


def closed_form_fisher(link: str, m: np.ndarray, eta: np.ndarray) -> np.ndarray:
    mu = scipy_mu(link, eta)
    if link == "log":
        return m * mu
    variance = mu * scipy_one_minus_mu(link, eta)
    if link == "logit":
        return m * variance
    if link == "probit":
        return m * scipy.stats.norm.pdf(eta) ** 2 / variance
    return m * np.exp(eta - np.exp(eta)) ** 2 / variance


@pytest.mark.parametrize(("name", "link"), PAIRS)
def test_fisher_weights_match_closed_forms(name, link):
    eta = np.linspace(-6.0, 2.5, 13)
    m = np.where(np.arange(eta.size) % 3 == 0, 1.0, 7.0) if name == "binomial" else np.ones(eta.size)
    eta_large = np.array([-30.0, -20.0, 20.0, 30.0])
    w = evaluate(family(name, link), eta, m=m)[2]
    w_large = evaluate(family(name, link), eta_large)[2]
    assert np.all(w > 0)
    np.testing.assert_allclose(w, closed_form_fisher(link, m, eta), rtol=1e-10, atol=0.0)
    assert np.all(np.isfinite(w_large)) and np.all(w_large >= 0)


def observed_information(fam: Family, eta: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """d^2 (d_i / 2) / d eta^2 at each (eta_i, y_i, m_i), by jax.grad twice."""

    def half_deviance(e, y, m):
        return 0.5 * fam.deviance(y, m, e)

    with jax.enable_x64(True):
        out = jax.jit(jax.vmap(jax.grad(jax.grad(half_deviance))))(jnp.asarray(eta), jnp.asarray(y), jnp.asarray(m))
    return np.asarray(out)


@pytest.mark.parametrize("link", BINOMIAL_LINKS)
def test_fisher_weights_are_the_expected_second_derivative_of_half_the_deviance_binomial(link):
    eta = np.array([-2.0, -0.5, 0.3, 1.5])
    # every (eta, m, k) with k = 0..m successes out of m = 1 or 6 trials
    cases = [(e, m, k) for m in (1.0, 6.0) for e in eta for k in range(int(m) + 1)]
    ee, mm, kk = (np.array(c) for c in zip(*cases))
    observed = observed_information(family("binomial", link), ee, kk / mm, mm)
    weighted = scipy.stats.binom.pmf(kk, mm, scipy_mu(link, ee)) * observed
    for m in (1.0, 6.0):
        expected = np.array([weighted[(mm == m) & (ee == e)].sum() for e in eta])
        for name in ("bernoulli", "binomial") if m == 1.0 else ("binomial",):
            w = evaluate(family(name, link), eta, m=np.full(eta.size, m))[2]
            np.testing.assert_allclose(w, expected, rtol=1e-9, atol=0.0)
        spread = np.array([np.ptp(observed[(mm == m) & (ee == e)]) for e in eta])
        if link == "logit":
            np.testing.assert_allclose(spread, 0.0, atol=1e-12)
        else:
            assert spread.min() > 1e-3


def test_fisher_weights_are_the_second_derivative_of_half_the_deviance_poisson():
    eta = np.repeat([-2.0, 0.0, 1.7], 3)
    y = np.tile([0.0, 1.0, 6.0], 3)
    observed = observed_information(family("poisson"), eta, y, np.ones(eta.size))
    w = evaluate(family("poisson"), eta)[2]
    np.testing.assert_allclose(observed, np.exp(eta), rtol=1e-12)
    np.testing.assert_allclose(w, observed, rtol=1e-12)


KEYS = jax.random.split(jax.random.key(2024), 4)
PER_KEY = 5_000
# One jitted sampler per family, vmapped over KEYS and always given PER_KEY observations, so each compiles once.
SAMPLERS = {
    name: jax.jit(jax.vmap(family(name).sample, in_axes=(0, None, None)))
    for name in ("bernoulli", "binomial", "poisson")
}


def draw(name: str, mu: np.ndarray, weights: np.ndarray, keys: jax.Array = KEYS) -> np.ndarray:
    """Samples of shape (len(keys), PER_KEY): one row per key."""
    assert mu.shape == weights.shape == (PER_KEY,)
    with jax.enable_x64(True):
        y = np.asarray(SAMPLERS[name](keys, jnp.asarray(mu), jnp.asarray(weights)))
    assert y.dtype == np.float64 and y.shape == (len(keys), PER_KEY)
    return y


@pytest.mark.parametrize(("name", "mu", "m"), [("bernoulli", 0.3, 1.0), ("binomial", 0.35, 7.0), ("poisson", 3.5, 1.0)])
def test_sample_moments_over_20000_draws(name, mu, m):
    y = draw(name, np.full(PER_KEY, mu), np.full(PER_KEY, m)).ravel()
    assert y.size == 20_000
    variance = mu if name == "poisson" else mu * (1.0 - mu) / m
    se = np.sqrt(variance / y.size)
    assert abs(y.mean() - mu) < 5.0 * se
    assert abs(y.var() / variance - 1.0) < 0.1


def test_binomial_samples_are_proportions_of_the_trials():
    m = np.tile([1.0, 2.0, 5.0, 9.0], PER_KEY // 4)
    mu = np.tile([0.5, 0.5, 0.2, 0.7], PER_KEY // 4)
    y = draw("binomial", mu, m)
    successes = y * m
    np.testing.assert_allclose(successes, np.rint(successes), atol=1e-9)
    assert y.min() >= 0.0 and y.max() <= 1.0
    for trials, p in ((1.0, 0.5), (2.0, 0.5), (5.0, 0.2), (9.0, 0.7)):
        sel = np.broadcast_to(m == trials, y.shape)
        assert set(np.rint(successes[sel])) <= set(range(int(trials) + 1))
        assert abs(y[sel].mean() - p) < 5.0 * np.sqrt(p * (1 - p) / trials / sel.sum())
    assert set(np.rint(successes[np.broadcast_to(m == 2.0, y.shape)])) == {0.0, 1.0, 2.0}


def test_poisson_and_bernoulli_samples_have_the_right_support():
    mu = np.tile([0.05, 1.0, 12.0, 3.5], PER_KEY // 4)
    counts = draw("poisson", mu, np.ones(PER_KEY))
    flips = draw("bernoulli", mu / 12.5, np.ones(PER_KEY))
    assert counts.min() >= 0.0
    np.testing.assert_array_equal(counts, np.rint(counts))
    assert counts[:, mu == 12.0].max() > 12.0
    assert abs(counts[:, mu == 0.05].mean() - 0.05) < 5.0 * np.sqrt(0.05 / counts[:, mu == 0.05].size)
    assert set(np.unique(flips)) == {0.0, 1.0}
    assert abs(flips[:, mu == 12.0].mean() - 0.96) < 5.0 * np.sqrt(0.96 * 0.04 / flips[:, mu == 12.0].size)


@pytest.mark.parametrize("name", ["bernoulli", "binomial", "poisson"])
def test_sample_is_pure_in_its_key(name):
    mu = np.tile([0.2, 0.5, 0.9, 0.4], PER_KEY // 4) * (10.0 if name == "poisson" else 1.0)
    m = np.ones(PER_KEY) if name == "bernoulli" else np.tile([1.0, 4.0, 10.0, 3.0], PER_KEY // 4)
    order = np.array([2, 0, 3, 1])
    y = draw(name, mu, m)
    np.testing.assert_array_equal(draw(name, mu, m), y)
    np.testing.assert_array_equal(draw(name, mu, m, KEYS[order]), y[order])
    assert all(not np.array_equal(y[i], y[j]) for i in range(4) for j in range(i))


def test_family_defaults_and_case_insensitive_names():
    assert family("bernoulli") == Family("bernoulli", "logit")
    assert family("binomial") == Family("binomial", "logit")
    assert family("poisson") == Family("poisson", "log")
    assert family("Poisson") == Family("poisson", "log")
    assert family("BINOMIAL", "Probit") == Family("binomial", "probit")
    assert family("Bernoulli", "CLOGLOG") == Family("bernoulli", "cloglog")
    assert hash(family("BERNOULLI")) == hash(Family("bernoulli", "logit"))


@pytest.mark.parametrize(
    ("name", "link", "bad"),
    [
        ("tweedie", None, "'tweedie'"),
        ("binomal", "logit", "'binomal'"),
        ("poisson", "logit", "'logit'"),
        ("binomial", "log", "'log'"),
        ("bernoulli", "identity", "'identity'"),
    ],
)
def test_family_rejects_unknown_names_and_links(name, link, bad):
    with pytest.raises(ValueError, match=f"got {bad}$"):
        family(name, link)


def test_family_rejects_non_string_arguments():
    with pytest.raises(ValueError, match="got 3"):
        family(3)
    with pytest.raises(ValueError, match="got 1"):
        family("binomial", 1)


def test_takes_weights_only_for_the_binomial():
    assert family("binomial").takes_weights
    assert not family("bernoulli").takes_weights
    assert not family("poisson").takes_weights


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("bernoulli", [0.0, 1.0, 1.0, 0.0], [[0.0, 0.5], [1.0, 2.0], [-1.0, 0.0]]),
        ("binomial", [0.0, 0.25, 1.0, 2.0 / 3.0], [[0.0, 1.5], [-0.1, 0.5], [0.3, 0.5]]),
        ("poisson", [0.0, 3.0, 17.0, 1e6], [[1.0, 2.5], [-1.0, 2.0]]),
    ],
)
def test_check_response_accepts_the_support_and_names_the_response_otherwise(name, good, bad):
    """The binomial's proportions are checked with their trials (12: 0.3 x 12 is not a whole number)."""
    fam = family(name)
    trials = 12.0 if name == "binomial" else 1.0
    assert fam.check_response(np.array(good), np.full(len(good), trials), "resp") is None
    for y in bad:
        with pytest.raises(ValueError, match=f"'resp'.*{name}"):
            fam.check_response(np.array(y), np.full(len(y), trials), "resp")


_bernoulli_logit = family("bernoulli", "logit")
_deviance_pair = jax.jit(
    lambda eta: (
        _bernoulli_logit.deviance(jnp.ones_like(eta), jnp.ones_like(eta), eta),
        _bernoulli_logit.deviance(jnp.zeros_like(eta), jnp.ones_like(eta), eta),
    )
)


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, allow_infinity=False))
def test_bernoulli_logit_deviance_difference_is_minus_twice_the_log_odds(eta):
    with jax.enable_x64(True):
        d1, d0 = (float(d) for d in _deviance_pair(jnp.asarray(eta, dtype=jnp.float64)))
    assert np.isfinite(d1) and np.isfinite(d0)
    assert d1 >= 0.0 and d0 >= 0.0
    assert abs((d1 - d0) - (-2.0 * eta)) <= 1e-10
