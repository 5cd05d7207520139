"""R formula constructs fitted as lme4 fits them (tests/fixtures/formula_fits.json, written by
tests/fixtures/make_formula_fixtures.R): same optimum (objective to 1e-6 relative), coefficients
(by lme4's names where jaxmm names them the same), theta and sigma."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

FIXTURES = Path(__file__).parent / "fixtures"
FITS = {k: v for k, v in json.loads((FIXTURES / "formula_fits.json").read_text()).items() if k != "_meta"}
# lme4 backticks a non-syntactic name in a coefficient's name, jaxmm names the column as it is; a
# column's levels are named as MixedModels.jl names them (period: 2), a call's as lme4 does (factor(days)1)
JAXMM_NAMES = {"`days elapsed`": "days elapsed", "period2": "period: 2", "period3": "period: 3", "period4": "period: 4"}


@pytest.fixture(scope="module")
def data():
    cbpp = jaxmm.dataset("cbpp")
    return {
        "formula_data": pd.read_csv(FIXTURES / "formula_data.csv"),
        "cbpp": cbpp.assign(prop=cbpp["incidence"] / cbpp["size"]),
    }


def _fit(spec, data):
    frame = data[spec["data"]]
    family = None if spec["family"] == "gaussian" else spec["family"]
    kwargs = {k: spec[k] or None for k in ("weights", "offset")}
    return jaxmm.fit(spec["formula"], frame, REML=spec["REML"], family=family, **kwargs)


@pytest.mark.parametrize("name", sorted(FITS))
def test_same_fit_as_lme4(name, data):
    spec = FITS[name]
    m = _fit(spec, data)
    assert m.objective == pytest.approx(spec["objective"], rel=1e-6)
    expected_names = [JAXMM_NAMES.get(n, n) for n in spec["beta"]]
    assert list(m.coefnames) == expected_names
    beta = np.array(list(spec["beta"].values()))
    np.testing.assert_allclose(m.beta, beta, rtol=2e-4, atol=2e-4 * np.abs(beta).max())
    # theta as lme4 orders it: terms by decreasing number of levels (order_levels: (1 | subj), 18 levels,
    # before (1 + days | g10), 10 levels of 2 random effects each)
    np.testing.assert_allclose(m.theta, list(spec["theta"].values()), rtol=2e-3, atol=2e-3)
    if spec["family"] == "gaussian":
        assert m.sigma == pytest.approx(spec["sigma"], rel=1e-4)


# ---- what R says differently is refused, in one line naming the piece ----------------------


@pytest.mark.parametrize(
    "formula, family, kwargs, pieces",
    [
        ("reaction ~ . + (1 | subj)", None, {}, ["'.' (all other columns)"]),
        ("reaction ~ days %in% subj + (1 | subj)", None, {}, ["operator '%in%'"]),
        ("reaction ~ ns(days, 3) + (1 | subj)", None, {}, ["spline bases", "ns(days, 3)"]),
        ("reaction ~ as.numeric(days) + (1 | subj)", None, {}, ["function 'as.numeric'"]),
        ("reaction ~ days + (1 + offset(days) | subj)", None, {}, ["offset in random-effects term"]),
        ("reaction ~ days - offset(days) + (1 | subj)", None, {}, ["offset term 'offset(days)' cannot be subtracted"]),
        ("cbind(days, days) ~ 1 + (1 | subj)", "poisson", {}, ["needs family 'binomial'"]),
        ("cbind(days, days) ~ 1 + (1 | subj)", "binomial", {"weights": "days"}, ["weights with the response"]),
        ("cbind(days) ~ 1 + (1 | subj)", "binomial", {}, ["must be cbind(successes, failures)"]),
        ("reaction ~ days + (1 | subj)", None, {"offset": "nothere"}, ["offset 'nothere' is not a column"]),
        ("reaction ~ days + (1 | subj)", None, {"weights": [1.0, 2.0]}, ["weights must be a column name or have one"]),
        ("reaction ~ days + (1 | subj)", None, {"weights": "subj"}, ["weights must be numeric"]),
    ],
)
def test_refused_in_one_line(formula, family, kwargs, pieces, data):
    with pytest.raises(ValueError) as err:
        jaxmm.fit(formula, data["formula_data"], family=family, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, (piece, message)


# ---- offsets and weights in the simulation and the bootstrap -------------------------------


def test_simulation_adds_the_offset_and_divides_the_noise_by_root_weights(data):
    """y* = X beta + o + Z b + e / sqrt(w): at theta = 0, sqrt(w) (y* - X beta - o) / sigma is standard normal."""
    import jax

    spec = FITS["weights_offset"]
    m = _fit(spec, data)
    frame = data["formula_data"]
    beta, sigma = m.beta, 10.0
    sim = m.simulation((beta, sigma, np.zeros_like(m.theta)), use_u=False)
    keys = jax.random.split(jax.random.key(1), 400)
    lanes = m.lanes()
    y = np.asarray(jax.vmap(lambda k: lanes.response(lanes.simulate(k, sim)))(keys))
    mean = m.design.x @ beta + frame["off"].to_numpy()
    z = np.sqrt(frame["w"].to_numpy()) * (y - mean) / sigma
    assert abs(z.mean()) < 0.02 and z.std() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", ["weights_offset", "poisson_offset"])
def test_bootstrap_of_a_model_with_offset_and_weights(name, data):
    """Simulated from the fitted model and refitted to it: the replicates centre on the estimates."""
    m = _fit(FITS[name], data)
    samp = jaxmm.parametricbootstrap(3, 60, m, progress=False)
    beta = np.asarray(samp.replicates.beta).reshape(60, -1)
    assert np.all(np.abs(beta.mean(axis=0) - m.beta) < 4 * beta.std(axis=0) / np.sqrt(60))
    if m.has_dispersion:  # e / sqrt(w) drawn with the weights the refit divides by
        sigma = np.asarray(samp.replicates.sigma)
        assert abs(sigma.mean() - m.sigma) < 4 * sigma.std() / np.sqrt(60) + 0.01 * m.sigma


def test_double_bar_with_a_factor_is_refused():
    """lme4's (1 + recipe || replicate) is (1 | replicate) + (0 + recipe | replicate): recipe's levels correlated
    (7 thetas, -2 log L 1728.994 in lme4 1.1-31); jaxmm's uncorrelated reading would be another model."""
    cake = jaxmm.dataset("cake")
    with pytest.raises(ValueError, match=r"factor 'recipe', whose levels lme4 keeps correlated") as err:
        jaxmm.fit("angle ~ 1 + (1 + recipe || replicate)", cake)
    assert "\n" not in str(err.value)
    m = jaxmm.fit("angle ~ 1 + (1 | replicate) + (0 + recipe | replicate)", cake)
    assert len(m.theta) == 7 and m.objective == pytest.approx(1728.994, abs=1e-3)
    assert jaxmm.fit("angle ~ 1 + (1 + temp || replicate)", cake).structure.ntheta == 2  # no factor: as before
