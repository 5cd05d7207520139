"""Likelihood-ratio tests (classical and parametric bootstrap) against lme4's anova() and
pbkrtest's PBmodcomp, and the bootstrap's custom statistics and conditional (use_u) simulation.

The fixture tests/fixtures/pbkrtest_lrt.json is written by bench/pbkrtest_pbmodcomp.R (sleepstudy,
ML fits; PBmodcomp with nsim = 2000). Compilation dominates the run time, so the models are
module fixtures, each pblrt kernel (one per pair of models) is compiled once, and the statistic
tests share one statistic function.

Monte Carlo tolerance for the reference distribution. For each quantile x_q (q = 0.5, 0.9, 0.95,
0.99) of pbkrtest's n_R = 2000 values, the share of jaxmm's n = NSAMP values at or below it,
F_n(x_q), estimates F(x_q) = q up to two independent errors: the binomial error of F_n, variance
q(1 - q)/n, and the error of x_q itself, which moves F(x_q) by a variance q(1 - q)/n_R (the
probability integral transform of a sample quantile). So |F_n(x_q) - q| <= 4 sqrt(q(1 - q)
(1/n + 1/n_R)) if both programs sample one distribution: a 4-sigma bound, met by chance with
probability 1 - 6e-5 per check, and violated by a reference simulated from the wrong model (the
large one) or refitted wrongly (the shift would be several sigma).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from scipy import stats as sps

import jaxmm
from jaxmm.bootstrap import simulated_responses
from jaxmm.lrt import check_nested

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pbkrtest_lrt.json").read_text())
LARGE = "reaction ~ 1 + days + (1 + days | subj)"
SMALL = {"slope": "reaction ~ 1 + (1 + days | subj)", "ranef": "reaction ~ 1 + days + (1 | subj)"}
ZEROCORR = "reaction ~ 1 + days + (1 | subj) + (0 + days | subj)"
NSAMP = 400
SEED = 42
STAT_NSAMP = 24


@pytest.fixture(scope="module")
def sleep():
    return jaxmm.dataset("sleepstudy")


@pytest.fixture(scope="module")
def large(sleep):
    return jaxmm.fit(LARGE, sleep)


@pytest.fixture(scope="module")
def small(sleep):
    return {name: jaxmm.fit(formula, sleep) for name, formula in SMALL.items()}


@pytest.fixture(scope="module")
def pb(small, large):
    return {name: jaxmm.pblrt(SEED, NSAMP, m, large, progress=False) for name, m in small.items()}


# ---- the classical test against lme4's anova() ------------------------------------------------------
def _check_anova(test, anova):
    np.testing.assert_allclose(test.objective, anova["deviance"], rtol=1e-9)
    assert list(test.dof) == anova["npar"] and test.df == anova["df"]
    np.testing.assert_allclose(test.lrt, anova["chisq"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(test.pvalue, anova["p_value"], rtol=1e-4)


@pytest.mark.parametrize("name", ["slope", "ranef", "zerocorr"])
def test_lrt_matches_lme4_anova(name, sleep, small, large):
    m = jaxmm.fit(ZEROCORR, sleep) if name == "zerocorr" else small[name]
    test = jaxmm.likelihoodratiotest(m, large)
    _check_anova(test, FIXTURE[name]["anova"])
    assert not test.reml and test.nobs == 180
    assert test.pvalue == sps.chi2.sf(test.lrt, test.df)
    text = repr(test)
    assert f"1: {m.formula}" in text and f"2: {LARGE}" in text and f"{test.lrt:.4f}" in text


def test_reml_fits_with_different_fixed_effects_are_refitted_by_ml(sleep):
    s, big = jaxmm.fit(SMALL["slope"], sleep, REML=True), jaxmm.fit(LARGE, sleep, REML=True)
    reml_objectives = (s.objective, big.objective)
    with pytest.warns(UserWarning, match="refitting the REML fit"):
        test = jaxmm.likelihoodratiotest(s, big)
    assert not test.reml
    _check_anova(test, FIXTURE["reml"]["anova"])  # anova() refits REML fits by ML too
    assert s.REML and big.REML and (s.objective, big.objective) == reml_objectives  # the user's fits are untouched


def test_reml_fits_with_the_same_fixed_effects_compare_reml_criteria(sleep):
    s, big = jaxmm.fit(ZEROCORR, sleep, REML=True), jaxmm.fit(LARGE, sleep, REML=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test = jaxmm.likelihoodratiotest(s, big)
    assert test.reml and test.objective == (s.objective, big.objective)
    assert test.lrt == max(s.objective - big.objective, 0.0) and "REML crit." in repr(test)


# ---- what is nested ---------------------------------------------------------------------------------
def _model(formula, data):
    return jaxmm.LinearMixedModel(formula, data)  # nesting is checked on the designs: no fit needed


@pytest.mark.parametrize(
    "small_formula,large_formula,message",
    [
        (LARGE, SMALL["slope"], "fixed-effects column 'days'"),  # the wrong way round
        ("reaction ~ 1 + days + (0 + days | subj)", "reaction ~ 1 + days + (1 | subj)", "term on 'subj'"),
        (
            SMALL["slope"],
            "reaction ~ 1 + days + zerocorr(1 + days | subj)",
            "term on 'subj'",
        ),  # correlation not in large
        ("reaction ~ 1 + days + (1 | subj2)", LARGE, "no random-effects term on 'subj2'"),
        ("reaction ~ 1 + days + (1 + days | subj)", LARGE, "it has 6 parameters, m_large 6"),
        ("reaction ~ 1 + days2 + (1 | subj)", LARGE, "fixed-effects column 'days2'"),
        ("reaction2 ~ 1 + days + (1 | subj)", LARGE, "different data"),
    ],
)
def test_not_nested(sleep, small_formula, large_formula, message):
    data = sleep.assign(subj2=sleep["subj"], days2=sleep["days"] ** 2, reaction2=2 * sleep["reaction"])
    with pytest.raises(ValueError, match=message):
        check_nested(_model(small_formula, data), _model(large_formula, data))


def test_nested_forms(sleep):
    check_nested(_model(ZEROCORR, sleep), _model(LARGE, sleep))
    check_nested(
        _model("reaction ~ 1 + days + (1 | subj)", sleep),
        _model("reaction ~ 1 + days + zerocorr(1 + days | subj)", sleep),
    )


def test_errors(sleep, small, large):
    with pytest.raises(ValueError, match="different data"):
        check_nested(_model(SMALL["ranef"], sleep.iloc[:-10]), _model(LARGE, sleep))
    with pytest.raises(ValueError, match="m_small must be a fitted"):
        jaxmm.likelihoodratiotest(_model(SMALL["ranef"], sleep), large)
    with pytest.raises(ValueError, match="m_large must be a fitted"):
        jaxmm.pblrt(1, 10, small["ranef"], _model(LARGE, sleep), progress=False)
    with pytest.raises(ValueError, match="not nested"):
        jaxmm.likelihoodratiotest(large, small["ranef"])
    with pytest.raises(ValueError, match="nsamp"):
        jaxmm.pblrt(1, 0, small["ranef"], large, progress=False)


# ---- the parametric bootstrap against pbkrtest's PBmodcomp -------------------------------------------
@pytest.mark.parametrize("name", ["slope", "ranef"])
def test_reference_distribution_matches_pbmodcomp(name, pb):
    ref = FIXTURE[name]["reference"]
    result = pb[name]
    assert result.nsamp == NSAMP and result.nused + result.nfailed == NSAMP and result.nfailed <= 2
    assert np.all(result.reference >= 0.0)
    for q, x in zip(ref["quantile_probs"], ref["quantiles"]):
        share = np.mean(result.reference <= x)
        bound = 4 * np.sqrt(q * (1 - q) * (1 / result.nused + 1 / ref["nsim"]))
        assert abs(share - q) <= bound, (q, x, share, bound)
    # the positive LRT*'s mean (the Bartlett correction), within 4 standard errors of pbkrtest's
    positive = result.reference[result.reference > 0]
    se = np.sqrt(ref["var"] / len(positive) + ref["var"] / ref["npos"])
    assert abs(positive.mean() - ref["mean"]) <= 4 * se


@pytest.mark.parametrize("name", ["slope", "ranef"])
def test_pvalues(name, pb):
    result = pb[name]
    assert result.lrt == jaxmm.likelihoodratiotest(result.fits[0].model, result.fits[1].model).lrt
    assert result.pvalue_chisq == result.test.pvalue
    # the observed LRT is far beyond every replicate, as it was in PBmodcomp's 2000
    assert result.pvalue_bootstrap == 1 / (1 + result.nused)
    text = repr(result)
    assert f"{NSAMP} replicates, {result.nused} used" in text and "Bartlett" in text and "Gamma" in text


@pytest.mark.parametrize("name", ["slope", "ranef"])
def test_bartlett_and_gamma_follow_pbkrtest(name, pb):
    """Given a reference with PBmodcomp's moments, the Bartlett and Gamma p-values are PBmodcomp's."""
    ref = FIXTURE[name]["reference"]
    probs = (np.arange(1000) + 0.5) / 1000

    def cv2_gap(shape):  # squared coefficient of variation of Gamma(shape) quantiles, less pbkrtest's
        x = sps.gamma.ppf(probs, shape)
        return x.var(ddof=1) / x.mean() ** 2 - ref["var"] / ref["mean"] ** 2

    x = sps.gamma.ppf(probs, scipy.optimize.brentq(cv2_gap, 0.05, 50.0))
    x *= ref["mean"] / x.mean()  # positive values with pbkrtest's mean and variance
    np.testing.assert_allclose([x.mean(), x.var(ddof=1)], [ref["mean"], ref["var"]], rtol=1e-9)
    result = pb[name]
    same_moments = jaxmm.BootstrapLikelihoodRatioTest(result.test, x, np.ones(len(x), dtype=bool), result.fits)
    np.testing.assert_allclose(result.lrt, ref["lrt"], rtol=1e-7)
    # pbkrtest computes 1 - pchisq(...): absolute errors of about 1e-16, the size of the p-values here
    np.testing.assert_allclose(same_moments.pvalue_bartlett, ref["p_bartlett"], rtol=1e-4, atol=1e-15)
    np.testing.assert_allclose(same_moments.pvalue_gamma, ref["p_gamma"], rtol=1e-4, atol=1e-15)


def test_replicates_are_single_fits_of_the_small_models_simulations(sleep, small, large, pb):
    m, result = small["ranef"], pb["ranef"]
    for i, y in enumerate(simulated_responses(m, SEED, 3)):
        df = sleep.assign(reaction=np.asarray(y))
        single = [jaxmm.fit(f, df).objective for f in (SMALL["ranef"], LARGE)]
        np.testing.assert_allclose([result.fits[0].objective[i], result.fits[1].objective[i]], single, rtol=1e-8)
        assert result.used[i]
        np.testing.assert_allclose(result.reference[i], max(single[0] - single[1], 0.0), atol=1e-5)


def test_plot_reference(pb):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    result = pb["ranef"]
    fig = jaxmm.plot.reference(result)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == result.nused
    assert [line.get_gid() for line in ax.lines] == ["chi-square", "observed"]
    assert ax.lines[1].get_xdata()[0] == result.lrt
    matplotlib.pyplot.close(fig)


# ---- bootstrap statistics and conditional simulation ----------------------------------------------------
def _beta_and_fitted(r):
    return jnp.concatenate([r.beta, r.fitted])


@pytest.fixture(scope="module")
def stat_boot(large):
    return jaxmm.parametricbootstrap(SEED, STAT_NSAMP, large, statistic=_beta_and_fitted, progress=False)


def test_statistic_of_the_fit(large, stat_boot):
    samp = stat_boot
    assert samp.statistic.shape == (STAT_NSAMP, 2 + large.nobs)
    np.testing.assert_array_equal(samp.statistic[:, :2], samp.replicates.beta)
    plain = jaxmm.parametricbootstrap(SEED, STAT_NSAMP, large, progress=False)
    np.testing.assert_array_equal(plain.replicates.beta, samp.replicates.beta)  # a statistic changes no fit
    ci = samp.statistic_confint(0.9)
    assert list(ci.columns) == ["index", "lower", "upper"] and len(ci) == 2 + large.nobs
    assert (ci["lower"][1], ci["upper"][1]) == jaxmm.shortestcovint(samp.replicates.beta[:, 1], 0.9)
    et = samp.statistic_confint(method="equaltail")
    np.testing.assert_allclose(
        [et["lower"][0], et["upper"][0]], np.quantile(samp.replicates.beta[:, 0], [0.025, 0.975])
    )
    with pytest.raises(ValueError, match="no statistic"):
        plain.statistic_confint()


def test_statistic_is_saved_and_combined(large, stat_boot, tmp_path):
    path = tmp_path / "stat.parquet"
    stat_boot.save(path)
    back = jaxmm.restorereplicates(path, large)
    np.testing.assert_array_equal(back.statistic, stat_boot.statistic)
    with pytest.raises(ValueError, match="share replicates"):
        jaxmm.vcat(stat_boot, back)  # the same replicates twice
    both = jaxmm.vcat(stat_boot, dataclasses.replace(back, provenance=()))  # of unknown provenance: combined
    assert both.statistic.shape == (2 * STAT_NSAMP, *stat_boot.statistic.shape[1:])
    with pytest.raises(ValueError, match="with and without a statistic"):
        jaxmm.vcat(stat_boot, jaxmm.MixedModelBootstrap(large, stat_boot.replicates))


def test_use_u_holds_the_random_effects_at_their_conditional_modes(large):
    """With a tiny residual sigma, a replicate is X beta + Z b-hat (use_u) or X beta (not), and its
    refit's fitted values reproduce that response."""
    tiny = 1e-6 * large.sigma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fits of nearly exact responses need not converge
        held = jaxmm.parametricbootstrap(
            SEED, STAT_NSAMP, large, sigma=tiny, use_u=True, statistic=_beta_and_fitted, progress=False
        )
        drawn = jaxmm.parametricbootstrap(
            SEED, STAT_NSAMP, large, sigma=tiny, statistic=_beta_and_fitted, progress=False
        )
    fitted = large.fitted()
    x_beta = np.asarray(large.design.x) @ large.beta.to_numpy()
    np.testing.assert_allclose(held.statistic[:, 2:], np.tile(fitted, (STAT_NSAMP, 1)), atol=1e-3)
    np.testing.assert_allclose(drawn.statistic[:, 2:], np.tile(x_beta, (STAT_NSAMP, 1)), atol=1e-3)
    assert np.abs(fitted - x_beta).max() > 10.0  # the two differ by Z b-hat
    with pytest.raises(ValueError, match="use_u"):
        jaxmm.parametricbootstrap(SEED, 5, large, use_u=True, theta=large.theta, progress=False)
    with pytest.raises(ValueError, match="use_u"):
        jaxmm.parametricbootstrap(SEED, 5, large, use_u="yes", progress=False)
    with pytest.raises(ValueError, match="statistic"):
        jaxmm.parametricbootstrap(SEED, 5, large, statistic=3, progress=False)
