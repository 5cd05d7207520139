"""Fits against lme4 (stored fixtures from tests/fixtures/make_lme4_fixtures.R) and published MixedModels.jl values."""

import json
from pathlib import Path

import numpy as np
import pytest

import jaxmm

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "lme4_fits.json").read_text())

# lme4 syntax in the fixtures; our formulas say the same thing (zerocorr as MixedModels.jl writes it).
FORMULAS = {
    "dyestuff": "yield ~ 1 + (1|batch)",
    "dyestuff2": "yield ~ 1 + (1|batch)",
    "sleepstudy": "reaction ~ 1 + days + (1 + days|subj)",
    "sleepstudy_zerocorr": "reaction ~ 1 + days + zerocorr(1 + days|subj)",
    "sleepstudy_intercept": "reaction ~ 1 + days + (1|subj)",
    "penicillin": "diameter ~ 1 + (1|plate) + (1|sample)",
    "pastes": "strength ~ 1 + (1|batch/cask)",
    "cake": "angle ~ 1 + recipe * temperature + (1|recipe:replicate)",
    "insteval": "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
}
SMALL = [k for k in FORMULAS if k != "insteval"]


def _fit(key: str, reml: bool) -> jaxmm.LinearMixedModel:
    ref = FIXTURES[f"{key}_{'REML' if reml else 'ML'}"]
    return jaxmm.fit(FORMULAS[key], jaxmm.dataset(ref["dataset"]), REML=reml)


def _assert_same_optimum(m: jaxmm.LinearMixedModel, objective: float) -> None:
    """At the reference optimum (within 1e-6 relative, as the bar says) and not suspiciously below it."""
    assert m.optsum.converged
    assert m.objective <= objective * (1 + 1e-6)
    assert m.objective >= objective * (1 - 1e-9)


@pytest.mark.parametrize("reml", [False, True], ids=["ML", "REML"])
@pytest.mark.parametrize("key", SMALL)
def test_matches_lme4(key, reml):
    ref = FIXTURES[f"{key}_{'REML' if reml else 'ML'}"]
    m = _fit(key, reml)
    _assert_same_optimum(m, ref["objective"])
    np.testing.assert_allclose(m.theta, ref["theta"], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(m.sigma, ref["sigma"], rtol=1e-5)
    assert [n.replace(": ", "").replace(" & ", ":") for n in m.beta.index] == ref["beta_names"]
    np.testing.assert_allclose(m.beta.to_numpy(), ref["beta"], rtol=1e-6, atol=1e-8 * np.abs(ref["beta"]).max())
    np.testing.assert_allclose(m.stderror.to_numpy(), ref["se"], rtol=2e-4)
    assert m.nobs == ref["nobs"]
    assert m.issingular() == ref["isSingular"]
    if not reml:
        np.testing.assert_allclose([m.loglikelihood, m.aic, m.bic], [ref["logLik"], ref["AIC"], ref["BIC"]], rtol=1e-9)
    vc = m.varcorr()
    ref_sd = sorted(r["sdcor"] for r in ref["varcorr"] if r["var2"] is None)
    np.testing.assert_allclose(sorted(vc[vc["var2"].isna()]["sdcor"]), ref_sd, rtol=2e-4, atol=1e-6)


def test_sleepstudy_ranef_and_fitted_match_lme4():
    ref = FIXTURES["sleepstudy_ML"]
    m = _fit("sleepstudy", False)
    re = m.ranef()["subj"]
    for row in ref["ranef"]:
        np.testing.assert_allclose(
            re.loc[row["subj"]].to_numpy(), [row["(Intercept)"], row["days"]], rtol=1e-3, atol=1e-3
        )
    np.testing.assert_allclose(m.fitted()[:10], ref["fitted_first10"], rtol=1e-6)
    np.testing.assert_allclose(m.residuals(), m.design.y - m.fitted())


# Published MixedModels.jl values (ML unless said otherwise).
PUBLISHED = [
    ("dyestuff", "yield ~ 1 + (1|batch)", 327.3270598811428, [0.7525806757718846]),
    ("dyestuff2", "yield ~ 1 + (1|batch)", 162.87303665382575, [0.0]),
    (
        "sleepstudy",
        "reaction ~ 1 + days + (1 + days|subj)",
        1751.9393444647046,
        [0.929221307, 0.01816838, 0.22264487096],
    ),
    (
        "sleepstudy",
        "reaction ~ 1 + days + zerocorr(1 + days|subj)",
        1752.0032551398835,
        [0.9458106880922268, 0.22692826607677266],
    ),
    (
        "penicillin",
        "diameter ~ 1 + (1|plate) + (1|sample)",
        332.18834867227616,
        [1.5375772376554968, 3.219751321180035],
    ),
    ("pastes", "strength ~ 1 + (1|batch/cask)", 247.99446586289676, [3.5268858714382905, 1.3299230213750168]),
]


@pytest.mark.parametrize("name,formula,objective,theta", PUBLISHED, ids=[f"{p[0]}:{p[1]}" for p in PUBLISHED])
def test_matches_mixedmodels_jl(name, formula, objective, theta):
    m = jaxmm.fit(formula, jaxmm.dataset(name))
    _assert_same_optimum(m, objective)
    # The deviance is flat near the optimum: published theta agree to about 2e-5 (ours give the
    # lower objective for sleepstudy: 1751.93934446320 against 1751.93934446467 at theirs).
    np.testing.assert_allclose(m.theta, theta, rtol=0, atol=5e-5)


def test_dyestuff_published_details():
    m = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff"))
    np.testing.assert_allclose(m.sigma, 49.510099986291145, rtol=1e-7)
    vc = m.varcorr()
    np.testing.assert_allclose(vc.loc[vc["grp"] == "batch", "sdcor"].item(), 37.26034462135931, rtol=1e-6)
    np.testing.assert_allclose(m.beta["(Intercept)"], 1527.5, rtol=1e-12)
    np.testing.assert_allclose(m.stderror["(Intercept)"], 17.69455188898009, rtol=1e-6)
    reml = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff"), REML=True)
    _assert_same_optimum(reml, 319.65427684225216)


def test_sleepstudy_published_fixef():
    m = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy"))
    np.testing.assert_allclose(m.beta.to_numpy(), [251.40510484848477, 10.4672859595959], rtol=1e-8)
    np.testing.assert_allclose(m.stderror.to_numpy(), [6.632257721914501, 1.5022354739749826], rtol=2e-5)
    assert m.coeftable().columns.tolist() == ["Est.", "SE", "z", "p"]
    assert m.dof == 6


def test_singular_fit_lands_on_boundary():
    m = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff2"))
    assert m.theta[0] == 0.0
    assert m.issingular()
    vc = m.varcorr()
    assert vc.loc[vc["grp"] == "batch", "sdcor"].item() == 0.0


def test_split_terms_equal_zerocorr():
    sleep = jaxmm.dataset("sleepstudy")
    a = jaxmm.fit("reaction ~ 1 + days + (1|subj) + (0 + days|subj)", sleep)
    b = jaxmm.fit("reaction ~ 1 + days + zerocorr(1 + days|subj)", sleep)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-13)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-8)


def test_rank_deficient_fixed_effects():
    sleep = jaxmm.dataset("sleepstudy")
    sleep["days2"] = 2.0 * sleep["days"]
    m = jaxmm.fit("reaction ~ 1 + days + days2 + (1|subj)", sleep)
    full = jaxmm.fit("reaction ~ 1 + days + (1|subj)", sleep)
    assert m.rank == 2 and list(m.beta.index) == ["(Intercept)", "days", "days2"]
    beta2 = m.beta["days2"]
    assert beta2 == 0.0 and np.signbit(beta2)
    assert np.isnan(m.stderror["days2"])
    np.testing.assert_allclose(m.objective, full.objective, rtol=1e-12)
    np.testing.assert_allclose(m.beta[["(Intercept)", "days"]], full.beta, rtol=1e-10)
    assert m.dof == full.dof


def test_scaled_response_gives_scaled_estimates():
    sleep = jaxmm.dataset("sleepstudy")
    base = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", sleep)
    for scale in (1e6, 1e-6):
        scaled = sleep.assign(reaction=sleep["reaction"] * scale)
        m = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", scaled)
        np.testing.assert_allclose(m.theta, base.theta, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(m.beta, base.beta * scale, rtol=1e-7)
        np.testing.assert_allclose(m.sigma, base.sigma * scale, rtol=1e-7)
        np.testing.assert_allclose(m.objective, base.objective + 2 * 180 * np.log(scale), rtol=1e-9)


def test_print_summary():
    m = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy"))
    text = str(m)
    for piece in (
        "maximum likelihood",
        "1751.9393",
        "subj",
        "(Intercept)",
        "days",
        "Residual",
        "Number of obs: 180",
        "+0.08",
    ):
        assert piece in text
    assert "not fitted" in repr(jaxmm.LinearMixedModel("reaction ~ 1 + (1|subj)", jaxmm.dataset("sleepstudy")))


def test_insteval_published():
    """73,421 rows and 4,114 random effects: the block design at scale."""
    m = jaxmm.fit("y ~ 1 + service + (1|s) + (1|d) + (1|dept)", jaxmm.dataset("insteval"))
    _assert_same_optimum(m, 237721.7687745563)
    ref = FIXTURES["insteval_ML"]
    np.testing.assert_allclose(m.theta, ref["theta"], rtol=2e-3)
    np.testing.assert_allclose(m.beta.to_numpy(), ref["beta"], rtol=1e-5)
