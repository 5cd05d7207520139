"""Generalized linear mixed models against lme4's glmer (stored fixtures from
tests/fixtures/make_glmer_fixtures.R). Each model is compiled once (module-scoped fits).

For nAGQ > 1 lme4 1.1-31's -2 logLik lacks the saturated model's -2 log-likelihood, which the
fixtures store as `dev_saturated`: jaxmm's objective is lme4's plus it (glmm.adaptive_quadrature)."""

import json
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmm
from jaxmm.glmm import GeneralizedLinearMixedModel
from jaxmm.glmm.laplace import adaptive_quadrature, glmm_data, laplace

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "glmer_fits.json").read_text())


def _cbpp():
    d = jaxmm.dataset("cbpp")
    return d.assign(prop=d["incidence"] / d["size"])


def _cbpp_animals():
    """cbpp with one row per animal (a Bernoulli response): incidence 1s, then 0s, herd-period by herd-period."""
    d = jaxmm.dataset("cbpp")
    y = np.concatenate([np.repeat([1.0, 0.0], [k, n - k]) for k, n in zip(d["incidence"], d["size"])])
    return d.loc[d.index.repeat(d["size"]), ["herd", "period"]].reset_index(drop=True).assign(y=y)


def _verbagg():
    d = jaxmm.dataset("verbagg")
    return d.assign(r2=(d["r2"] == "Y").astype(float))


MODELS = {
    "cbpp": (_cbpp, "prop ~ 1 + period + (1|herd)", "binomial", "size", None),
    "grouseticks": (
        lambda: jaxmm.dataset("grouseticks"),
        "ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location)",
        "poisson",
        None,
        None,
    ),
    "verbagg": (_verbagg, "r2 ~ 1 + anger + gender + btype + situ + (1|id) + (1|item)", "bernoulli", None, None),
    "grouseticks1": (
        lambda: jaxmm.dataset("grouseticks"),
        "ticks ~ 1 + year + cheight + (1|brood)",
        "poisson",
        None,
        None,
    ),
    "cbpp_probit": (_cbpp, "prop ~ 1 + period + (1|herd)", "binomial", "size", "probit"),
    "cbpp_cloglog": (_cbpp, "prop ~ 1 + period + (1|herd)", "binomial", "size", "cloglog"),
    "cbpp_bernoulli_probit": (_cbpp_animals, "y ~ 1 + period + (1|herd)", "bernoulli", None, "probit"),
}
# (model, nAGQ); nAGQ = 0 is lme4's, jaxmm's fast=True
CASES = [
    ("cbpp", 1),
    ("cbpp", 0),
    ("grouseticks", 1),
    ("verbagg", 1),
    ("cbpp", 9),
    ("cbpp", 25),
    ("grouseticks1", 9),
    ("cbpp_probit", 1),
    ("cbpp_probit", 9),
    ("cbpp_cloglog", 1),
    ("cbpp_bernoulli_probit", 1),
]


@pytest.fixture(scope="module")
def fits():
    cache = {}

    def get(key, nagq):
        if (key, nagq) not in cache:
            data, formula, family, weights, link = MODELS[key]
            cache[key, nagq] = jaxmm.fit(
                formula, data(), family=family, link=link, weights=weights, fast=nagq == 0, nAGQ=max(nagq, 1)
            )
        return cache[key, nagq]

    return get


@pytest.mark.parametrize("key,nagq", CASES, ids=[f"{k}-{f'nAGQ{n}' if n else 'fast'}" for k, n in CASES])
def test_matches_glmer(fits, key, nagq):
    m = fits(key, nagq)
    fast = nagq == 0
    name = f"{key}_nAGQ{nagq}"
    ref, tight = FIXTURES[name], FIXTURES[f"{name}_tight"]
    saturated = tight.get("dev_saturated", 0.0)
    assert isinstance(m, GeneralizedLinearMixedModel) and m.optsum.converged and m.nAGQ == max(nagq, 1)
    # lme4's default PIRLS tolerance leaves -2 logLik up to ~3e-6 relative high; with PIRLS
    # converged tightly lme4 reaches our optimum, to its optimiser's precision (grouseticks: 3e-8).
    assert m.objective <= (ref["objective"] + saturated) * (1 + 1e-6)
    assert (
        (tight["objective"] + saturated) * (1 - 1e-7) <= m.objective <= (tight["objective"] + saturated) * (1 + 1e-10)
    )
    np.testing.assert_allclose(m.theta, tight["theta"], rtol=1e-3)
    assert [n.replace(": ", "") for n in m.beta.index] == ref["beta_names"]
    np.testing.assert_allclose(m.beta.to_numpy(), tight["beta"], rtol=1e-3, atol=1e-3)
    # lme4's standard errors: nAGQ = 0 from RX (exact); nAGQ = 1 from its finite-difference
    # Hessian, which moves by up to 1.5% between its default and tight fits (grouseticks' cheight)
    np.testing.assert_allclose(m.stderror.to_numpy(), tight["se"], rtol=1e-5 if fast else 2e-2)
    expected = [tight["logLik"] - saturated / 2, tight["AIC"] + saturated, tight["BIC"] + saturated]
    np.testing.assert_allclose([m.loglikelihood, m.aic, m.bic], expected, rtol=1e-7)
    assert m.nobs == ref["nobs"] and m.issingular() == ref["isSingular"]
    vc = m.varcorr()
    np.testing.assert_allclose(vc["sdcor"], [r["sdcor"] for r in tight["varcorr"]], rtol=1e-4)
    assert list(vc["grp"]) == [r["grp"] for r in tight["varcorr"]]
    re = m.ranef()[tight["ranef_first_group"]]
    np.testing.assert_allclose(
        re.loc[tight["ranef_first_levels"]].iloc[:, 0], tight["ranef_first"], rtol=1e-3, atol=1e-4
    )
    np.testing.assert_allclose(m.fitted()[:10], tight["fitted_first10"], rtol=1e-4)


def test_weights_as_array_and_summary(fits):
    m = fits("cbpp", 1)
    d = _cbpp()
    same = jaxmm.fit("prop ~ 1 + period + (1|herd)", d, family="binomial", weights=d["size"].to_numpy())
    np.testing.assert_allclose(same.objective, m.objective, rtol=1e-12)
    text = str(m)
    for piece in ("Laplace", "binomial", "logit", "184.0526", "herd", "period: 4", "Number of obs: 56"):
        assert piece in text
    assert "Residual" not in text


def test_a_binomial_proportion_without_its_trials_is_an_error():
    """The weights are the trials: proportions with one trial each are not whole numbers of successes
    (glmer only warns, and fits a model of far less information)."""
    d = _cbpp()
    with pytest.raises(ValueError, match=r"must be whole numbers of successes for family 'binomial'"):
        jaxmm.fit("prop ~ 1 + period + (1|herd)", d, family="binomial", weights=np.ones(len(d)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"nAGQ": 9}, "fast and nAGQ apply to a generalized"),
        ({"family": "tweedie"}, "family must be one of"),
        ({"family": "binomial", "link": "log"}, "link for family 'binomial'"),
        ({"family": "binomial", "REML": True}, "REML applies to linear"),
        ({"link": "logit"}, "apply to a generalized"),
        *[
            ({"family": "binomial", "weights": "size", "nAGQ": n}, r"nAGQ must be an integer from 1 to 100")
            for n in (0, -1, 2.5, "9", True, 101)
        ],
        ({"family": "poisson", "weights": "size"}, "family 'poisson' takes none"),
        ({"family": "binomial", "weights": "nosuch"}, "'nosuch' is not a column"),
        ({"family": "binomial", "weights": [1.0, 2.0]}, "one value per row"),
        ({"family": "bernoulli"}, "must be 0 or 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    d = _cbpp()
    with pytest.raises(ValueError, match=message):
        jaxmm.fit("prop ~ 1 + period + (1|herd)", d, **kwargs)


def test_poisson_rejects_non_counts():
    d = jaxmm.dataset("grouseticks").assign(ticks=lambda x: x["ticks"] + 0.5)
    with pytest.raises(ValueError, match="non-negative counts"):
        jaxmm.fit("ticks ~ 1 + (1|brood)", d, family="poisson")


def test_gaussian_family_is_a_linear_mixed_model():
    m = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff"), family="gaussian")
    assert isinstance(m, jaxmm.LinearMixedModel)


def test_quadrature_summary(fits):
    text = str(fits("cbpp", 9))
    assert "Adaptive Gauss-Hermite quadrature, nAGQ = 9" in text and "Laplace" not in text


@pytest.mark.parametrize(
    "formula,terms",
    [
        ("ticks ~ 1 + year + (1|brood) + (1|location)", r"\(1 \| brood\), \(1 \| location\)"),
        ("ticks ~ 1 + cheight + (1 + cheight|brood)", r"\(1 \+ cheight \| brood\)"),
    ],
)
def test_quadrature_needs_one_scalar_term(formula, terms):
    """As lme4: nAGQ > 1 for a single scalar random-effects term only; nAGQ = 1 for any model."""
    with pytest.raises(ValueError, match=rf"nAGQ > 1 needs a single scalar random-effects term.*{terms}"):
        jaxmm.fit(formula, jaxmm.dataset("grouseticks"), family="poisson", nAGQ=2)


@partial(jax.jit, static_argnames=("structure", "fam", "rules"))
def _quadratures(theta, beta, data, structure, fam, rules):
    lap = laplace(theta, beta, data, structure, fam, False).objective
    return lap, [adaptive_quadrature(theta, beta, data, structure, fam, False, k).objective for k in rules]


def test_quadrature_converges_to_the_integral(fits):
    """At cbpp's nAGQ = 25 optimum: 1 node is the Laplace value; 15 and 25 nodes agree with each
    other and with -2 log L by brute-force integration of each herd's integral, far more closely
    than the Laplace value does."""
    m = fits("cbpp", 25)
    theta, beta = m.theta, m.design.to_fit_beta(m.beta.to_numpy())  # of glmm_data's standardised X_s
    with jax.enable_x64(True):
        data = jax.tree.map(jnp.asarray, glmm_data(m.design))
        lap, (dev1, dev15, dev25) = _quadratures(
            jnp.asarray(theta), jnp.asarray(beta), data, structure=m.structure, fam=m.family, rules=(1, 15, 25)
        )
        # herd j: int prod_i p(y_i | x_i beta + theta b) phi(b) db, trapezoidal on a fine grid
        b = np.linspace(-12.0, 12.0, 24001)
        eta = np.asarray(data.x @ beta)[:, None] + theta[0] * b[None, :]
        d = np.asarray(m.family.deviance(data.y[:, None], data.weights[:, None], jnp.asarray(eta)))
        herd = np.asarray(data.index[:, 0])
        log_integrand = (
            -0.5 * np.stack([d[herd == j].sum(axis=0) for j in range(m.structure.terms[0].nlevels)]) - 0.5 * b**2
        )
        peak = log_integrand.max(axis=1)
        log_integral = peak + np.log(
            np.exp(log_integrand - peak[:, None]).sum(axis=1) * (b[1] - b[0]) / np.sqrt(2 * np.pi)
        )
    exact = -2.0 * log_integral.sum()
    assert float(dev1) == float(lap) == pytest.approx(fits("cbpp", 1).objective, rel=1e-5)
    assert abs(float(dev25) - exact) < 1e-8 and abs(float(dev15) - exact) < 1e-8
    assert abs(float(dev1) - exact) > 0.05
    assert float(dev25) == pytest.approx(m.objective, rel=1e-12)
