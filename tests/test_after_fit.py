"""What a researcher does after the fit (issue 21), against lme4 1.1-31 (tests/fixtures/after_fit.json,
made by tests/fixtures/make_after_fit_fixtures.R): predict, ranef(condVar), confint (Wald, profile),
the profile's zeta, anova, refit, vcov; simulate by its distribution and reproducibility.

Tolerances: quantities of the fit itself (predictions, condVar, Wald intervals, vcov, anova's
criteria) 1e-5 relative: the two optimisers' theta differ by about 1e-6 relative at the same
objective. Profile intervals 1e-3 relative: lme4 interpolates its profile points with splines
where jaxmm solves zeta = +-z exactly (observed: within 6e-5). At lme4's own profile points (exact
evaluations, each an optimisation by bobyqa) jaxmm's deviance is never above lme4's by more than 1e-6
relative (it is the constrained minimum: lme4 is above it on sleepstudy's far tail, by 0.55 at zeta -4.6, and
within 2e-3 elsewhere), nor above its own refit from the estimate; the deviance increase (zeta^2)
agrees where |zeta| < 3 to 1e-5 (sleepstudy; observed 6e-6), 2e-4 (penicillin; 9e-5), 2e-3 (cbpp;
1.1e-3: lme4's optimum, zeta's origin, is 5.7e-4 above jaxmm's in the deviance).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "after_fit.json").read_text())
REL = 1e-5
# cbpp: lme4's default PIRLS tolerance (tolPwrss 1e-7) leaves its modes inexact, -2 logLik 3e-6
# relative above the optimum (tests/fixtures/make_glmer_fixtures.R): its quantities get 2e-4
TOL = {"sleepstudy": REL, "penicillin": REL, "cbpp": 1e-3}
# lme4 1.1-31's vcov of a glmer fit is from a finite-difference Hessian, jaxmm's from the exact one:
# cbpp's standard errors are 0.5-1.3% apart, so its vcov and Wald intervals get 3e-2
WALD = {"sleepstudy": REL, "penicillin": REL, "cbpp": 3e-2}


@pytest.fixture(scope="module")
def sleep():
    return jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy"), REML=True)


@pytest.fixture(scope="module")
def pen():
    return jaxmm.fit("diameter ~ 1 + (1|plate) + (1|sample)", jaxmm.dataset("penicillin"), REML=True)


@pytest.fixture(scope="module")
def cbpp():
    d = jaxmm.dataset("cbpp")
    return jaxmm.fit(
        "prop ~ 1 + period + (1|herd)", d.assign(prop=d.incidence / d["size"]), family="binomial", weights="size"
    )


@pytest.fixture(scope="module")
def sleep_profile(sleep):
    with pytest.warns(UserWarning, match="ML refit"):
        return jaxmm.profile(sleep)


@pytest.fixture(scope="module")
def pen_profile(pen):
    with pytest.warns(UserWarning, match="ML refit"):
        return jaxmm.profile(pen)


@pytest.fixture(scope="module")
def cbpp_profile(cbpp):
    return jaxmm.profile(cbpp)


def _label(parm: str, coefnames: list[str], lme4_beta: list[str]):
    """lme4's profile name as jaxmm's (type, group, names)."""
    if parm == "sigma":
        return ("σ", "residual", None)
    if parm.startswith("sd_"):
        column, group = parm[3:].rsplit("|", 1)
        return ("σ", group, column)
    if parm.startswith("cor_"):
        pair, group = parm[4:].rsplit("|", 1)
        b, a = pair.split(".", 1)  # lme4 names cor_<second>.<first>
        return ("ρ", group, f"{a}, {b}")
    return ("β", None, coefnames[lme4_beta.index(parm)])


def _lined_up(ours: pd.DataFrame, ref: list[dict], m) -> tuple[np.ndarray, np.ndarray]:
    """(ours, lme4's) interval ends, rows matched by parameter."""
    keys = [
        tuple(None if pd.isna(v) else v for v in row)
        for row in ours[["type", "group", "names"]].itertuples(index=False)
    ]
    rows, expected = [], []
    for r in ref:
        label = _label(r["parm"], list(m.coefnames), FIXTURES_BETA[id(m)])
        rows.append(ours.iloc[keys.index(label)][["lower", "upper"]].to_numpy(dtype=float))
        expected.append([np.nan if r["lower"] is None else r["lower"], np.nan if r["upper"] is None else r["upper"]])
    return np.array(rows), np.array(expected)


FIXTURES_BETA: dict[int, list[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _beta_names(sleep, pen, cbpp):
    for m, key in ((sleep, "sleepstudy"), (pen, "penicillin"), (cbpp, "cbpp")):
        FIXTURES_BETA[id(m)] = FIXTURES[key]["beta_names"]


CASES = [("sleep", "sleepstudy"), ("pen", "penicillin"), ("cbpp", "cbpp")]


@pytest.mark.parametrize("name,key", CASES)
def test_fit_matches(name, key, request):
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    assert m.objective == pytest.approx(ref["objective"], rel=1e-7 if key != "cbpp" else 1e-5)
    np.testing.assert_allclose(m.vcov.to_numpy(), np.array(ref["vcov"]), rtol=WALD[key] if key == "cbpp" else 1e-4)
    np.testing.assert_allclose(jaxmm.vcov(m).to_numpy(), m.vcov.to_numpy())


@pytest.mark.parametrize("name,key", CASES)
def test_predict(name, key, request):
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    newdata = pd.DataFrame(ref["newdata"])
    np.testing.assert_allclose(m.predict(), ref["fitted"], rtol=TOL[key])
    np.testing.assert_allclose(m.predict(re_form="~0"), ref["population"], rtol=TOL[key])
    np.testing.assert_allclose(m.predict(re_form=False), ref["population"], rtol=TOL[key])
    np.testing.assert_allclose(m.predict(newdata, allow_new_levels=True), ref["predict_newdata"], rtol=TOL[key])
    np.testing.assert_allclose(m.predict(newdata, re_form="NA"), ref["predict_newdata_population"], rtol=TOL[key])
    if key == "cbpp":
        np.testing.assert_allclose(m.predict(type="link"), ref["fitted_link"], rtol=TOL[key])
        np.testing.assert_allclose(m.predict(re_form="~0", type="link"), ref["population_link"], rtol=TOL[key])
        np.testing.assert_allclose(
            m.predict(newdata, allow_new_levels=True, type="link"), ref["predict_newdata_link"], rtol=TOL[key]
        )
        np.testing.assert_allclose(m.predict(), m.fitted(), rtol=1e-12)
    else:
        np.testing.assert_allclose(m.predict(), m.fitted(), rtol=1e-12)


NEWDATA_MODELS = {
    "poly": ("reaction ~ 1 + poly(days, 2) + (1 | subj)", {}),
    "scale": ("reaction ~ 1 + scale(days) + (1 + scale(days) | subj)", {}),
    "offset_term": ("reaction ~ 1 + days + offset(2 * days) + (1 | subj)", {}),
    "offset_column": ("reaction ~ 1 + days + (1 | subj)", {"offset": "off"}),
    "poisson_offset": ("incidence ~ 1 + period + offset(log(size)) + (1 | herd)", {"family": "poisson"}),
}


@pytest.mark.parametrize("key", NEWDATA_MODELS)
def test_predict_newdata_uses_the_fitted_datas_settings(key):
    """poly's basis and scale's centre and scale are the fitted data's on new rows (R's makepredictcall);
    offsets are evaluated on the new rows. lme4 1.1-31's predict drops an offset given as lmer's offset=
    argument on newdata (only offset() terms are evaluated there): jaxmm adds it, so its predictions are
    lme4's plus the offset, and equal the offset_term model's (the same model: 3 days + 10 is absorbed
    by beta). poisson_offset: on the link scale (lme4's default type), 2e-3 absolute: lme4's glmer stops
    9e-4 above jaxmm's optimum in -2 log L, its intercept 5.6e-4 away."""
    formula, kwargs = NEWDATA_MODELS[key]
    ref = FIXTURES["predict_newdata"][key]
    newdata = pd.DataFrame(ref["newdata"])
    if key == "poisson_offset":
        m = jaxmm.fit(formula, jaxmm.dataset("cbpp"), **kwargs)
        np.testing.assert_allclose(m.predict(newdata, allow_new_levels=True, type="link"), ref["predict"], atol=2e-3)
        np.testing.assert_allclose(m.predict(newdata, re_form=False, type="link"), ref["population"], atol=2e-3)
        doubled = m.predict(newdata.assign(size=2 * newdata["size"]), re_form=False, type="link")
        np.testing.assert_allclose(doubled - m.predict(newdata, re_form=False, type="link"), np.log(2.0), rtol=1e-12)
        return
    data = jaxmm.dataset("sleepstudy").assign(off=lambda d: 3 * d.days + 10)
    m = jaxmm.fit(formula, data, REML=True, **kwargs)
    assert m.objective == pytest.approx(ref["objective"], rel=1e-7)
    offset = newdata["off"].to_numpy() if key == "offset_column" else 0.0  # lme4 drops it (above)
    np.testing.assert_allclose(m.predict(newdata, allow_new_levels=True), np.add(ref["predict"], offset), rtol=1e-5)
    np.testing.assert_allclose(m.predict(newdata, re_form="~0"), np.add(ref["population"], offset), rtol=1e-5)
    np.testing.assert_allclose(m.predict(), m.fitted(), rtol=1e-12)  # the fitted rows: the fit's own offset
    if key == "offset_column":  # given as an array, the offset has no values for new rows unless passed
        fitted = jaxmm.fit(formula, data, REML=True, offset=data["off"].to_numpy())
        with pytest.raises(ValueError, match="pass them as offset="):
            fitted.predict(newdata, allow_new_levels=True)
        np.testing.assert_allclose(
            fitted.predict(newdata, allow_new_levels=True, offset=newdata["off"].to_numpy()),
            m.predict(newdata, allow_new_levels=True),
            rtol=1e-9,
        )
        np.testing.assert_allclose(
            m.predict(newdata, allow_new_levels=True, offset="off"), m.predict(newdata, allow_new_levels=True)
        )
        with pytest.raises(ValueError, match="offset= is for newdata"):
            m.predict(offset="off")


def test_predict_levels_by_name_and_errors(sleep, cbpp):
    # levels matched by name: a string "2" for cbpp's period 2, categorical or not
    by_name = cbpp.predict(pd.DataFrame({"period": ["2", "3"], "herd": ["1", "2"]}))
    as_cat = cbpp.predict(pd.DataFrame({"period": pd.Categorical(["2", "3"]), "herd": ["1", "2"]}))
    np.testing.assert_allclose(by_name, as_cat)
    with pytest.raises(ValueError, match=r"newdata column 'period' has level '9'"):
        cbpp.predict(pd.DataFrame({"period": ["9"], "herd": ["1"]}))
    with pytest.raises(ValueError, match=r"newdata has no column 'days'"):
        sleep.predict(pd.DataFrame({"subj": ["S308"]}))
    with pytest.raises(ValueError, match=r"level 'S999' of grouping factor 'subj'.*allow_new_levels=True"):
        sleep.predict(pd.DataFrame({"days": [1.0], "subj": ["S999"]}))
    with pytest.raises(ValueError, match="re_form must be"):
        sleep.predict(re_form="~(1|subj)")
    with pytest.raises(ValueError, match="type must be"):
        sleep.predict(type="terms")
    # the population prediction needs no grouping column
    assert sleep.predict(pd.DataFrame({"days": [0.0]}), re_form="~0")[0] == pytest.approx(sleep.beta["(Intercept)"])


@pytest.mark.parametrize("name,key", CASES)
def test_ranef_condvar(name, key, request):
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    ranef = jaxmm.ranef(m, condvar=True)
    for group, r in ref["ranef"].items():
        table = ranef[group]
        assert list(table.index) == r["levels"]
        np.testing.assert_allclose(
            table.to_numpy(),
            np.array(r["modes"]).reshape(table.shape),
            rtol=TOL[key] * 10 if key == "cbpp" else 1e-4,
            atol=1e-7,
        )
        cv = table.attrs["condvar"]
        np.testing.assert_allclose(
            cv.reshape(len(cv), -1),
            np.array(r["condvar"]).reshape(len(cv), -1),
            rtol=TOL[key] * 10 if key == "cbpp" else 1e-4,
        )


@pytest.mark.parametrize("name,key", CASES)
def test_confint_wald(name, key, request):
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    ours, expected = _lined_up(m.confint(method="wald"), ref["confint_wald"], m)
    np.testing.assert_allclose(ours, expected, rtol=WALD[key])  # NaN (lme4's NA) for the variance components
    pd.testing.assert_frame_equal(jaxmm.confint(m), m.confint())


def test_profile_sleepstudy(sleep, sleep_profile):
    ref = FIXTURES["sleepstudy"]
    for level, key in ((0.95, "confint_profile"), (0.90, "confint_profile_90")):
        ours, expected = _lined_up(sleep_profile.confint(level), ref[key], sleep)
        np.testing.assert_allclose(ours, expected, rtol=1e-3)
    tbl = sleep_profile.tbl
    assert list(tbl.columns) == ["type", "group", "names", "value", "zeta"]
    for _, part in tbl.groupby(["type", "group", "names"], dropna=False):
        assert np.all(np.diff(part.sort_values("value")["zeta"]) > 0)  # monotone
    pd.testing.assert_frame_equal(jaxmm.confint(sleep_profile), sleep_profile.confint())


# |d(p) - d_hat - zeta_lme4^2| where |zeta| < 3: the deviance increase at lme4's profile points
INCREASE = {"sleepstudy": 1e-5, "penicillin": 2e-4, "cbpp": 2e-3}


@pytest.mark.parametrize("name,key", CASES)
def test_profile_points_are_constrained_minima(name, key, request):
    """At each of lme4's profile points: jaxmm's deviance, from the nearest point of its own profile,
    is not above lme4's (profile_base + zeta^2) nor above its refit from the estimate, by more than 1e-6
    relative; the deviance increase d - d_hat (zeta^2) matches lme4's where |zeta| < 3."""
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    prof = request.getfixturevalue(f"{name}_profile")
    problem = prof._problem
    units = 2 * m.nobs * np.log(problem.scale)  # an LMM's deviance is of y / scale: -2 log L of y is this more
    for point in ref["profile"]:
        i = problem.labels.index(_label(point["parm"], list(m.coefnames), ref["beta_names"]))
        known = np.array(list(prof._starts[i]))
        nearest = prof._starts[i][known[np.argmin(np.abs(known - point["value"]))]]
        d, _ = problem.deviance(i, point["value"], nearest)
        d_estimate, _ = problem.deviance(i, point["value"], problem.start(i))
        d_lme4 = ref["profile_base"] + point["zeta"] ** 2
        assert d <= d_estimate + 1e-6 * abs(d), point
        assert d + units <= d_lme4 + 1e-6 * abs(d_lme4), point
        if abs(point["zeta"]) < 3:
            assert d - problem.base == pytest.approx(point["zeta"] ** 2, abs=INCREASE[key]), point


@pytest.mark.parametrize("name,key", [("pen", "penicillin"), ("cbpp", "cbpp")])
def test_confint_profile(name, key, request):
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    prof = request.getfixturevalue(f"{name}_profile")
    ours, expected = _lined_up(prof.confint(), ref["confint_profile"], m)
    np.testing.assert_allclose(ours, expected, rtol=1e-3)
    if name == "pen":
        with pytest.warns(UserWarning, match="ML refit"):
            pd.testing.assert_frame_equal(m.confint(method="profile"), prof.confint())


def test_confint_boot_lines_up(pen):
    boot = pen.confint(method="boot", nsim=40, seed=1)
    wald = pen.confint(method="wald")
    pd.testing.assert_frame_equal(boot[["type", "group", "names"]], wald[["type", "group", "names"]])
    assert np.all(boot["lower"] < boot["upper"])
    assert boot["lower"].iloc[0] < pen.beta.iloc[0] < boot["upper"].iloc[0]
    with pytest.raises(ValueError, match="method must be"):
        pen.confint(method="bca")


def test_anova():
    d = jaxmm.dataset("sleepstudy")
    models = [
        jaxmm.fit(f, d, REML=True)
        for f in ("reaction ~ 1 + (1|subj)", "reaction ~ 1 + days + (1|subj)", "reaction ~ 1 + days + (1 + days|subj)")
    ]
    with pytest.warns(UserWarning, match=r"refitting model\(s\) with ML \(instead of REML\)"):
        table = jaxmm.anova(models[2], models[0], models[1])
    _check_anova(table, FIXTURES["anova_sleepstudy"])
    c = jaxmm.dataset("cbpp").assign(prop=lambda x: x.incidence / x["size"])
    glmms = [
        jaxmm.fit(f, c, family="binomial", weights="size")
        for f in ("prop ~ 1 + (1|herd)", "prop ~ 1 + period + (1|herd)")
    ]
    _check_anova(jaxmm.anova(*glmms), FIXTURES["anova_cbpp"], rtol=1e-5)  # lme4's inexact PIRLS: see TOL
    with pytest.raises(ValueError, match="two or more"):
        jaxmm.anova(models[0])
    with pytest.raises(ValueError, match="one kind"):
        jaxmm.anova(models[0], glmms[0])


def _check_anova(table: pd.DataFrame, ref: dict, rtol: float = 1e-7) -> None:
    r = pd.DataFrame(ref["table"])
    np.testing.assert_array_equal(table["npar"].to_numpy(), r["npar"].to_numpy())
    for col in ("AIC", "BIC", "logLik", "deviance"):
        np.testing.assert_allclose(table[col].to_numpy(), r[col].to_numpy(), rtol=rtol)
    np.testing.assert_allclose(table["Chisq"].to_numpy()[1:], r["Chisq"].to_numpy()[1:].astype(float), rtol=1e-5)
    np.testing.assert_array_equal(table["Df"].to_numpy()[1:], r["Df"].to_numpy()[1:].astype(float))
    np.testing.assert_allclose(table["Pr(>Chisq)"].to_numpy()[1:], r["p"].to_numpy()[1:].astype(float), rtol=1e-3)


@pytest.mark.parametrize("name,key", [("sleep", "refit_sleepstudy"), ("cbpp", "refit_cbpp")])
def test_refit(name, key, request):
    m, ref = request.getfixturevalue(name), FIXTURES[key]
    new = m.refit(ref["y"])
    assert new is not m and m.objective == pytest.approx(
        FIXTURES["sleepstudy" if name == "sleep" else "cbpp"]["objective"], rel=1e-5
    )
    fit = ref["fit"]  # lmer / glmer fitted to the data with the new response
    assert new.objective == pytest.approx(fit["objective"], rel=1e-6 if name == "sleep" else 1e-5)
    np.testing.assert_allclose(new.beta.to_numpy(), fit["beta"], rtol=1e-4 if name == "sleep" else TOL["cbpp"])
    np.testing.assert_allclose(new.theta, fit["theta"], rtol=2e-3, atol=1e-3)
    with pytest.raises(ValueError, match="finite values"):
        m.refit(np.ones(3))


def test_simulate_lmm(sleep):
    from jaxmm.bootstrap.api import simulated_responses

    a, b = sleep.simulate(4, seed=7), sleep.simulate(4, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["sim_1", "sim_2", "sim_3", "sim_4"]
    assert not np.allclose(a["sim_1"], sleep.simulate(1, seed=8)["sim_1"])
    # replicate i of parametricbootstrap(seed) simulates the same response
    np.testing.assert_allclose(a.to_numpy().T, simulated_responses(sleep, 7, 4), rtol=1e-10)
    n = 4000
    held = sleep.simulate(n, seed=1, use_u=True).to_numpy()
    se = sleep.sigma / np.sqrt(n)
    assert np.max(np.abs(held.mean(axis=1) - sleep.fitted())) < 5 * se  # E[y | b = modes]
    assert held.std(axis=1, ddof=1).mean() == pytest.approx(sleep.sigma, rel=0.02)
    fresh = sleep.simulate(n, seed=2).to_numpy()
    days = jaxmm.dataset("sleepstudy")["days"].to_numpy()
    cov = sleep.varcorr()
    v0, v1 = cov["vcov"].iloc[0], cov["vcov"].iloc[1]
    c01 = cov["vcov"].iloc[2]
    expected_var = v0 + 2 * c01 * days + v1 * days**2 + sleep.sigma**2
    np.testing.assert_allclose(fresh.var(axis=1, ddof=1), expected_var, rtol=0.1)
    np.testing.assert_allclose(
        fresh.mean(axis=1), sleep.predict(re_form="~0"), atol=5 * np.sqrt(expected_var.max() / n)
    )
    new = sleep.simulate(3, seed=1, newdata=pd.DataFrame({"days": [1.0, 2.0], "subj": ["S308", "NEW"]}))
    assert new.shape == (2, 3)
    with pytest.raises(ValueError, match="nsim"):
        sleep.simulate(0)


def test_simulate_glmm(cbpp):
    sims = cbpp.simulate(2000, seed=3, use_u=True).to_numpy()
    size = jaxmm.dataset("cbpp")["size"].to_numpy()
    assert np.all(np.isclose(sims * size[:, None], np.round(sims * size[:, None])))  # whole numbers of successes
    mu = cbpp.fitted()
    assert np.max(np.abs(sims.mean(axis=1) - mu) / np.sqrt(mu * (1 - mu) / size / 2000)) < 5
    new = pd.DataFrame({"period": ["1", "4"], "herd": ["1", "99"], "trials": [10, 40]})
    with pytest.raises(ValueError, match="pass them as weights="):
        cbpp.simulate(1, newdata=new)
    # lme4's weights argument: the trials on newdata's rows, a column or one value per row
    draws = cbpp.simulate(2000, seed=4, newdata=new, weights="trials", use_u=True).to_numpy()
    successes = draws * new["trials"].to_numpy()[:, None]
    np.testing.assert_allclose(successes, np.round(successes), atol=1e-12)
    mu = cbpp.predict(new, allow_new_levels=True)
    assert np.max(np.abs(draws.mean(axis=1) - mu) / np.sqrt(mu * (1 - mu) / new["trials"].to_numpy() / 2000)) < 5
    by_value = cbpp.simulate(3, seed=4, newdata=new, weights=[10, 40])
    assert by_value.shape == (2, 3)
    pd.testing.assert_frame_equal(by_value, cbpp.simulate(3, seed=4, newdata=new, weights="trials"))
    with pytest.raises(ValueError, match="weights must be positive"):
        cbpp.simulate(1, newdata=new, weights=[0, 3])


def test_generics(sleep, cbpp):
    v = np.arange(100.0)
    assert jaxmm.shortestcovint(v, 0.5) == (0.0, 49.0)
    assert jaxmm.issingular(sleep) is False
    pd.testing.assert_series_equal(jaxmm.fixef(cbpp), cbpp.beta)
    pd.testing.assert_frame_equal(jaxmm.coeftable(sleep), sleep.coeftable())
    with pytest.raises(ValueError, match="fitted model"):
        jaxmm.fixef(v)
