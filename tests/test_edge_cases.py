"""Numerical edge cases, each fitted as lme4 fits it (fixtures from tests/fixtures/make_lme4_fixtures.R).

The data (tests/fixtures/edge_cases.csv, simulated by that script) have 12 groups of sizes 1 to 15,
three of them a single observation, so every model here is also a fit to unbalanced groups with
groups of size one. The models:

- edge_slope:            a random slope with a well-defined interior optimum
- edge_perfectcorr:      perfectly correlated random intercepts and slopes: the ML fit has rho = +1
- edge_grouplevel_slope: a random slope on a covariate with one value per group (singular ML fit)
- edge_collinear:        two fixed-effects columns that differ by noise of 1e-4 (condition ~1e6)
- edge_rankdeficient:    f1 * f2 with an empty cell: one aliased column, dropped as lme4 drops it

The singular dyestuff2 fit, the rank-deficient sleepstudy fit and the scaled sleepstudy response
are in tests/test_fits.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURES = json.loads((FIXTURE_DIR / "lme4_fits.json").read_text())
EDGE = sorted({key.rsplit("_", 1)[0] for key in FIXTURES if key.startswith("edge_")})
# Where the optimum is a ridge or nearly so, theta (and beta with it) is compared more loosely
# than the objective; collinear columns have coefficients determined only to cond(X) times the
# difference in theta. (The REML criterion of the collinear model is itself computed to about 1e-8
# relative: log|X'V^-1 X| of a matrix with condition ~1e12.)
THETA_ATOL = {"edge_grouplevel_slope": 2e-3, "edge_perfectcorr": 2e-4}
BETA_RTOL = {"edge_grouplevel_slope": 1e-3, "edge_perfectcorr": 1e-3, "edge_collinear": 1e-4}
LME4_SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(FIXTURE_DIR / "edge_cases.csv", dtype={"g": str, "f1": str, "f2": str})


def _fit(key: str, data: pd.DataFrame, reml: bool) -> jaxmm.LinearMixedModel:
    return jaxmm.fit(FIXTURES[f"{key}_ML"]["formula"], data, REML=reml)


def test_the_data_have_unbalanced_groups_and_groups_of_size_one(data):
    sizes = data["g"].value_counts()
    assert (sizes == 1).sum() == 3
    assert sizes.max() == 15
    assert pd.crosstab(data["f1"], data["f2"]).loc["b", "q"] == 0  # the empty cell


@pytest.mark.parametrize("reml", [False, True], ids=["ML", "REML"])
@pytest.mark.parametrize("key", EDGE)
def test_edge_case_matches_lme4(key, reml, data):
    ref = FIXTURES[f"{key}_{'REML' if reml else 'ML'}"]
    m = _fit(key, data, reml)
    assert m.optsum.converged
    # at lme4's optimum or below it, and not far below (which would be another model)
    assert m.objective <= ref["objective"] * (1 + 1e-6)
    assert m.objective >= ref["objective"] * (1 - 1e-6)
    np.testing.assert_allclose(m.theta, ref["theta"], rtol=2e-4, atol=THETA_ATOL.get(key, 2e-5))
    assert m.issingular(atol=LME4_SINGULAR_TOL) == ref["isSingular"]
    estimable = m.beta[list(m.design.estimable)]
    assert [n.replace(": ", "").replace(" & ", ":") for n in estimable.index] == ref["beta_names"]
    np.testing.assert_allclose(estimable.to_numpy(), ref["beta"], rtol=BETA_RTOL.get(key, 1e-5))
    np.testing.assert_allclose(
        m.stderror[list(m.design.estimable)].to_numpy(), ref["se"], rtol=max(2e-4, BETA_RTOL.get(key, 0))
    )
    np.testing.assert_allclose(m.sigma, ref["sigma"], rtol=max(1e-5, BETA_RTOL.get(key, 0)))
    assert m.nobs == ref["nobs"] == len(data)


def test_perfect_correlation_is_exactly_one(data):
    m = _fit("edge_perfectcorr", data, reml=False)
    assert m.theta[2] == 0.0 and m.issingular()
    vc = m.varcorr()
    rho = vc.loc[vc["var2"].notna(), "sdcor"].item()
    assert rho == pytest.approx(1.0, abs=1e-12)


def test_aliased_column_of_the_empty_cell(data):
    m = _fit("edge_rankdeficient", data, reml=False)
    assert list(m.coefnames) == ["(Intercept)", "f1: b", "f2: q", "f1: b & f2: q"]
    assert list(m.design.estimable) == [True, True, True, False]
    assert m.beta["f1: b & f2: q"] == 0.0 and np.isnan(m.stderror["f1: b & f2: q"])


@pytest.mark.parametrize("scale", [1e6, 1e-6])
@pytest.mark.parametrize("key", EDGE)
def test_rescaled_response_gives_rescaled_fit(key, scale, data):
    """y * c: the same theta, sigma and beta times c, objective + 2 n log c."""
    base = _fit(key, data, reml=False)
    response = base.design.response
    m = jaxmm.fit(base.formula, data.assign(**{response: data[response] * scale}))
    np.testing.assert_allclose(m.theta, base.theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.objective, base.objective + 2 * m.nobs * np.log(scale), rtol=1e-9)
    np.testing.assert_allclose(m.sigma, base.sigma * scale, rtol=1e-6)
    np.testing.assert_allclose(m.beta, base.beta * scale, rtol=1e-5)
