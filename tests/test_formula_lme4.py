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


# lme4 orders random-effects terms by decreasing number of levels; jaxmm (as MixedModels.jl) by decreasing
# number of random effects: (1 + days | g10) (20) comes before (1 | subj) (18 levels), so theta's order differs
ORDER = pytest.mark.xfail(reason="random-effects terms ordered by number of random effects, not levels", strict=True)


@pytest.mark.parametrize("name", [pytest.param(k, marks=ORDER) if k == "order_levels" else k for k in sorted(FITS)])
def test_same_fit_as_lme4(name, data):
    spec = FITS[name]
    m = _fit(spec, data)
    assert m.objective == pytest.approx(spec["objective"], rel=1e-6)
    expected_names = [JAXMM_NAMES.get(n, n) for n in spec["beta"]]
    assert list(m.coefnames) == expected_names
    beta = np.array(list(spec["beta"].values()))
    np.testing.assert_allclose(m.beta, beta, rtol=2e-4, atol=2e-4 * np.abs(beta).max())
    # theta as lme4 orders it: terms by decreasing number of levels
    np.testing.assert_allclose(m.theta, list(spec["theta"].values()), rtol=2e-3, atol=2e-3)
    if spec["family"] == "gaussian":
        assert m.sigma == pytest.approx(spec["sigma"], rel=1e-4)
