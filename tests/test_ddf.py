"""Inference on fixed effects (jaxmm/ddf.py, jaxmm/emmeans.py) against lmerTest 3.1-3 (Satterthwaite),
pbkrtest 0.5.2 (Kenward-Roger) and emmeans 1.8.4-1: tests/fixtures/ddf.json, written by
tests/fixtures/make_ddf_fixtures.R with lme4's optimiser tolerances tightened so that both fits are
at the same optimum (to about 1e-8).

Tolerances. df, t, F and p agree to 1e-5 relative (observed: at most 5e-7). lmerTest differentiates
the deviance and Cov(beta-hat) numerically (numDeriv's Richardson extrapolation): its df carry an
error of about 1e-7 relative here (1e-5 with lme4's default tolerances, where the fit is off the
optimum in the 6th digit). pbkrtest's Kenward-Roger is analytic, so its df agree to the fits'
agreement; jaxmm's derivatives are exact (autodiff). The GLMM (cbpp) is compared as
tests/test_glmm.py compares it: lme4's vcov(glmer) is from a finite-difference Hessian, jaxmm's
from the exact one, so standard errors differ by up to 2e-2 relative.
"""

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "ddf.json").read_text())
RTOL = 1e-5
METHODS = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward_roger"}


def _data(name: str) -> pd.DataFrame:
    if name == "cake_unbalanced":  # cake without rows 5, 12, 19, ... (R's numbering)
        d = jaxmm.dataset("cake")
        return d.drop(index=range(4, len(d), 7)).reset_index(drop=True)
    if name == "edge_cases":
        d = pd.read_csv(Path(__file__).parent / "fixtures" / "edge_cases.csv")
        return d.assign(**{c: pd.Categorical(d[c]) for c in ("g", "f1", "f2")})
    return jaxmm.dataset(name)


LMMS = ["sleepstudy", "penicillin", "cake", "cake_temp", "cake_unbalanced", "edge"]


@functools.cache
def _fit(name: str):
    rec = FIXTURES[name]
    return jaxmm.fit(rec["formula"], _data(rec["dataset"]), REML=True), rec


def _having(what: str) -> list[str]:
    """The models whose fixture holds `what` (penicillin has no fixed-effects term and no contrast)."""
    return [name for name in LMMS if what in FIXTURES[name]]


def _close(actual, expected, what):
    """Relative agreement, but for values that cancel to rounding error (a contrast of equal means)."""
    expected = np.asarray(expected, float)
    atol = 1e-9 * np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)
    np.testing.assert_allclose(np.asarray(actual, float), expected, rtol=RTOL, atol=atol, err_msg=what)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", LMMS)
def test_coeftable(name, method):
    m, rec = _fit(name)
    ref = pd.DataFrame(rec["summary"][METHODS[method]])
    ct = m.coeftable(ddf=method)
    assert list(ct.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    for col in ct.columns:
        _close(ct[col], ref[col], f"{method} {col}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", [3, 1])
@pytest.mark.parametrize("name", _having("anova"))
def test_anova(name, method, kind):
    m, rec = _fit(name)
    ref = pd.DataFrame(rec["anova"][f"type{kind}_{METHODS[method]}"]).set_index("term")
    table = m.anova(type=kind, ddf=method)
    assert list(table.index) == list(ref.index)
    for col in ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]:
        _close(table[col], ref[col], f"type {kind} {method} {col}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", _having("contest"))
def test_contest(name, method):
    m, rec = _fit(name)
    c = rec["contest"]
    lmat = np.array(c["L"], dtype=float).reshape(len(c["L"]), -1)
    key = METHODS[method]
    t = m.contest(lmat, ddf=method, joint=False)
    for col in ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]:
        _close(t[col], pd.DataFrame(c[f"t_{key}"])[col], f"contest t {method} {col}")
    f = m.contest(lmat, ddf=method, joint=True)
    for col in ["NumDF", "DenDF", "F value", "Pr(>F)"]:
        _close(f[col], pd.DataFrame(c[f"F_{key}"])[col], f"contest F {method} {col}")


EMMEANS = [
    ("cake", "recipe", dict(specs="recipe"), "kenward-roger"),
    ("cake", "temperature_by_recipe", dict(specs="temperature", by="recipe"), "kenward-roger"),
    ("cake", "recipe_temperature", dict(specs=["recipe", "temperature"]), "kenward-roger"),
    ("cake", "recipe_satterthwaite", dict(specs="recipe"), "satterthwaite"),
    ("cake_temp", "recipe", dict(specs="recipe"), "kenward-roger"),
    ("cake_temp", "recipe_at_temp_190", dict(specs="recipe", at={"temp": 190}), "kenward-roger"),
    ("cake_unbalanced", "recipe", dict(specs="recipe"), "kenward-roger"),
    ("cake_unbalanced", "temperature_by_recipe", dict(specs="temperature", by="recipe"), "kenward-roger"),
    ("cake_unbalanced", "recipe_satterthwaite", dict(specs="recipe"), "satterthwaite"),
    ("edge", "f1", dict(specs="f1"), "kenward-roger"),
]
FAMILIES = {
    "pairwise_tukey": ("pairwise", "tukey"),
    "trt_vs_ctrl_holm": ("trt.vs.ctrl", "holm"),
    "pairwise_bonferroni": ("pairwise", "bonferroni"),
    "pairwise_none": ("pairwise", "none"),
}


@pytest.fixture(scope="module")
def lmm_fits():
    fits = {}
    for key in {k for k, *_ in EMMEANS}:
        rec = FIXTURES[key]
        fits[key] = jaxmm.fit(rec["formula"], _data(rec["dataset"]), REML=True)
    return fits


@pytest.mark.parametrize("key,name,args,method", EMMEANS, ids=[f"{k}-{n}" for k, n, *_ in EMMEANS])
def test_emmeans(lmm_fits, key, name, args, method):
    rec = FIXTURES[key]["emmeans"][name]
    emm = lmm_fits[key].emmeans(**args, ddf=method)
    ref = pd.DataFrame(rec["table"])
    factors = [args["specs"]] if isinstance(args["specs"], str) else args["specs"]
    factors += [args["by"]] if "by" in args else []
    assert list(emm.table.columns) == factors + ["emmean", "SE", "df", "lower", "upper"]
    for f in factors:
        assert emm.table[f].astype(str).tolist() == ref[f].astype(str).tolist()
    for col, rcol in [("emmean", "emmean"), ("SE", "SE"), ("df", "df"), ("lower", "lower.CL"), ("upper", "upper.CL")]:
        _close(emm.table[col], ref[rcol], f"emmeans {col}")
    for family, (how, adjust) in FAMILIES.items():
        if family not in rec:
            continue
        c, r = emm.contrast(how, adjust=adjust), pd.DataFrame(rec[family])
        assert c["contrast"].tolist() == r["contrast"].tolist()
        for col, rcol in [("estimate", "estimate"), ("SE", "SE"), ("df", "df"), ("t", "t.ratio"), ("p", "p.value")]:
            _close(c[col], r[rcol], f"{family} {col}")


@pytest.fixture(scope="module")
def cbpp():
    d = jaxmm.dataset("cbpp")
    return jaxmm.fit(
        "prop ~ 1 + period + (1|herd)", d.assign(prop=d["incidence"] / d["size"]), family="binomial", weights="size"
    )


def test_emmeans_glmm(cbpp):
    rec = FIXTURES["cbpp"]["emmeans"]
    link, response = cbpp.emmeans("period"), cbpp.emmeans("period", type="response")
    ref = pd.DataFrame(rec["period"]["table"])
    np.testing.assert_allclose(link.table["emmean"], ref["emmean"], rtol=1e-3)
    np.testing.assert_allclose(link.table["SE"], ref["SE"], rtol=2e-2)
    assert np.all(np.isinf(link.table["df"]))
    # the back-transformation itself is exact: mu = expit(eta), SE(mu) = mu (1 - mu) SE(eta)
    mu = 1.0 / (1.0 + np.exp(-link.table["emmean"]))
    np.testing.assert_allclose(response.table["prob"], mu, rtol=1e-12)
    np.testing.assert_allclose(response.table["SE"], mu * (1 - mu) * link.table["SE"], rtol=1e-12)
    np.testing.assert_allclose(response.table["lower"], 1.0 / (1.0 + np.exp(-link.table["lower"])), rtol=1e-12)
    rref = pd.DataFrame(rec["period_response"]["table"])
    np.testing.assert_allclose(response.table["prob"], rref["prob"], rtol=1e-3)
    np.testing.assert_allclose(
        response.table[["SE", "lower", "upper"]], rref[["SE", "asymp.LCL", "asymp.UCL"]], rtol=2e-2
    )
    for family, (how, adjust) in FAMILIES.items():
        if family in rec["period"]:
            c, r = link.contrast(how, adjust=adjust), pd.DataFrame(rec["period"][family])
            assert c["contrast"].tolist() == r["contrast"].tolist()
            np.testing.assert_allclose(c["estimate"], r["estimate"], rtol=1e-3)
            np.testing.assert_allclose(c["t"], r["z.ratio"], rtol=2e-2)
            np.testing.assert_allclose(c["p"], r["p.value"], rtol=0.2)
    ratio, r = response.contrast("pairwise"), pd.DataFrame(rec["period_response"]["pairwise_ratio"])
    assert ratio["contrast"].tolist() == r["contrast"].tolist()
    np.testing.assert_allclose(ratio["odds.ratio"], r["odds.ratio"], rtol=1e-3)


def test_errors_and_notes(cbpp):
    d = jaxmm.dataset("sleepstudy")
    ml = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", d, REML=False)
    with pytest.warns(UserWarning, match="maximum-likelihood"):
        ml.coeftable(ddf="satterthwaite")
    with pytest.raises(ValueError, match="needs a REML fit"):
        ml.coeftable(ddf="kenward-roger")
    with pytest.raises(ValueError, match="ddf must be"):
        ml.coeftable(ddf="wald")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="L must have 2 columns"):
            ml.contest([1.0, 0.0, 0.0])
        with pytest.raises(ValueError, match="no estimable coefficient"):
            ml.contest(pd.Series({"day": 1.0}))
    with pytest.raises(ValueError, match="type must be"):
        ml.anova(type=2)
    with pytest.raises(ValueError, match="is no variable of the fixed effects"):
        ml.emmeans("subj")
    with pytest.raises(ValueError, match="linear mixed models"):
        cbpp.coeftable(ddf="satterthwaite")
    with pytest.raises(ValueError, match="adjust must be"):
        cbpp.emmeans("period").contrast(adjust="sidak")
    assert list(cbpp.coeftable().columns) == ["Est.", "SE", "z", "p"]  # ddf=None: Wald z, as before
