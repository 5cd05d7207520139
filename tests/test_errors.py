"""Every error the design and the model raise: one line, naming the column, level or argument at fault."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm import LinearMixedModel

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "lme4_fits.json").read_text())


@pytest.fixture
def df():
    rng = np.random.default_rng(20240611)
    n = 40
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + 5.0,
            "x": rng.normal(size=n),
            "g": np.repeat(list("abcdefgh"), 5),
            "s": ["u"] * n,
            "id": [f"i{i}" for i in range(n)],
            "one": ["A"] * n,
            "unused": rng.normal(size=n),
        }
    )


def _raises(match, formula, data, **kwargs):
    with pytest.raises(ValueError, match=match) as err:
        LinearMixedModel(formula, data, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


# ---- columns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ 1 + zz + (1 | g)",  # fixed part
        "y ~ 1 + x + (1 + zz | g)",  # random-effects expression
        "y ~ 1 + x + (1 | zz)",  # grouping factor
        "y ~ 1 + x + (1 | g:zz)",  # inside an interaction grouping
        "zz ~ 1 + x + (1 | g)",  # response
    ],
)
def test_unknown_column(df, formula):
    message = _raises(r"'zz' in formula .* is neither a column of the data", formula, df)
    assert "columns are: y, x, g" in message


def test_non_numeric_response(df):
    _raises(r"response column 's' is not numeric", "s ~ 1 + (1 | g)", df)


def test_boolean_response_is_not_numeric(df):
    _raises(r"response column 'y' is not numeric \(dtype bool\)", "y ~ 1 + (1 | g)", df.assign(y=df.y > 5))


def test_response_with_several_columns(df):
    _raises(r"response 'y \+ x' must be a single numeric column", "y + x ~ 1 + (1 | g)", df)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_response_with_inf(df, value):
    df.loc[3, "y"] = value
    _raises(r"response 'y' has infinite or NaN values", "y ~ 1 + x + (1 | g)", df)


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
def test_transformed_response_producing_nan(df):
    df.loc[3, "y"] = -1.0
    _raises(r"response 'log\(y\)' has infinite or NaN values", "log(y) ~ 1 + (1 | g)", df)


def test_fixed_predictor_with_inf(df):
    df.loc[7, "x"] = np.inf
    _raises(r"fixed-effects column 'x' has infinite or NaN values", "y ~ 1 + x + (1 | g)", df)


def test_random_predictor_with_inf(df):
    df.loc[7, "x"] = -np.inf
    _raises(r"random-effects term for 'g':.*column 'x' has infinite or NaN values", "y ~ 1 + (1 + x | g)", df)


# ---- missing values: dropped with a warning --------------------------------------------------


def test_rows_missing_a_predictor_are_dropped_with_warning(df):
    df.loc[[3, 17, 29], "x"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 3 of 40 rows with missing values in \['g', 'x', 'y'\]"):
        m = LinearMixedModel("y ~ 1 + x + (1 | g)", df)
    assert m.ndropped == 3
    assert m.nobs == 37
    assert m.design.y.shape == (37,)
    np.testing.assert_array_equal(m.design.y, df.y.drop(index=[3, 17, 29]).to_numpy())


def test_rows_missing_response_or_group_are_dropped(df):
    df.loc[0, "y"] = np.nan
    df["g"] = df["g"].astype(object)
    df.loc[[5, 6], "g"] = None
    with pytest.warns(UserWarning, match=r"dropped 3 of 40 rows"):
        m = LinearMixedModel("y ~ 1 + (1 | g)", df)
    assert (m.ndropped, m.nobs) == (3, 37)
    assert m.structure.terms[0].nlevels == 8


def test_missing_value_in_unused_column_drops_nothing(df):
    df.loc[[1, 2], "unused"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = LinearMixedModel("y ~ 1 + x + (1 | g)", df)
    assert (m.ndropped, m.nobs) == (0, 40)


def test_drop_leaves_a_single_level(df):
    # Only level 'a' has a complete response: after the drop, 'g' has one level.
    df.loc[5:, "y"] = np.nan
    with pytest.warns(UserWarning, match="dropped 35 of 40 rows"):
        _raises(r"grouping factor 'g' has a single level", "y ~ 1 + (1 | g)", df)


def test_all_rows_missing(df):
    df["x"] = np.nan
    _raises(r"every row has a missing value in one of the columns \['g', 'x', 'y'\]", "y ~ 1 + x + (1 | g)", df)


# ---- data -----------------------------------------------------------------------------------


def test_empty_data_frame(df):
    _raises(r"data has no rows", "y ~ 1 + (1 | g)", df.iloc[:0])


@pytest.mark.parametrize("data, kind", [(None, "NoneType"), ({"y": [1.0, 2.0]}, "dict"), (np.zeros((3, 2)), "ndarray")])
def test_data_not_a_data_frame(data, kind):
    _raises(rf"data must be a pandas DataFrame, got {kind}", "y ~ 1 + (1 | g)", data)


# ---- grouping factors and random effects -------------------------------------------------------


def test_grouping_factor_with_a_single_level(df):
    _raises(r"grouping factor 'one' has a single level; it needs at least two", "y ~ 1 + (1 | one)", df)


def test_every_observation_its_own_level(df):
    _raises(r"grouping factor 'id' has 40 levels for 40 observations", "y ~ 1 + (1 | id)", df)


def test_interaction_grouping_unique_per_row(df):
    _raises(r"grouping factor 'g:id' has 40 levels for 40 observations", "y ~ 1 + (1 | g) + (1 | g:id)", df)


def test_more_random_effects_than_observations(df):
    # 10 levels of 2 observations each: (1 + x | g2) has 20 random effects for 20 observations.
    small = df.iloc[:20].assign(g2=np.repeat([f"l{i}" for i in range(10)], 2))
    _raises(r"random-effects term for 'g2' has 20 random effects for 20 observations", "y ~ 1 + (1 + x | g2)", small)
    # the scalar term on the same data is fine
    assert LinearMixedModel("y ~ 1 + (1 | g2)", small).structure.terms[0].nranef == 10


@pytest.mark.parametrize(
    "formula, columns",
    [
        ("y ~ 1 + (1 | g) + (1 | g)", r"\['\(Intercept\)', '\(Intercept\)'\]"),
        ("y ~ 1 + (1 | g) + (1 + x | g)", r"\['\(Intercept\)', '\(Intercept\)', 'x'\]"),
        ("y ~ 1 + (x | g) + (0 + x | g)", r"\['\(Intercept\)', 'x', 'x'\]"),
    ],
)
def test_duplicated_random_effects_column(df, formula, columns):
    _raises(rf"random-effects terms for 'g' repeat a column: {columns}", formula, df)


def test_random_term_without_columns(df):
    _raises(r"random-effects term for 'g' has no columns", "y ~ 1 + (0 | g)", df)


def test_formula_errors_surface_from_the_model(df):
    _raises(r"grouping factor 'g \+ s'", "y ~ 1 + (1 | g + s)", df)
    _raises(r"no random-effects term", "y ~ 1 + x", df)


# ---- datasets ---------------------------------------------------------------------------------


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'sleepstudies'; available: cake, cbpp, .*verbagg"):
        jaxmm.dataset("sleepstudies")


# ---- fit arguments (checked before any computation) --------------------------------------------


@pytest.fixture(scope="module")
def sleep_model():
    return LinearMixedModel("reaction ~ 1 + days + (1 + days | subj)", jaxmm.dataset("sleepstudy"))


@pytest.mark.parametrize("theta0", [[1.0, 1.0], [1.0, 0.0, 1.0, 0.0], np.ones((2, 2))])
def test_theta0_wrong_length(sleep_model, theta0):
    n = np.asarray(theta0).size
    with pytest.raises(ValueError, match=rf"^theta0 must have length 3, got {n}$"):
        sleep_model.fit(theta0=theta0)
    assert sleep_model.optsum is None


@pytest.mark.parametrize("theta0", [[-1.0, 0.0, 1.0], [1.0, 0.0, np.nan], [1.0, np.inf, 1.0]])
def test_theta0_out_of_bounds(sleep_model, theta0):
    with pytest.raises(ValueError, match=r"theta0 must be finite with diagonal elements >= 0"):
        sleep_model.fit(theta0=theta0)


def test_unknown_solver_option(sleep_model):
    with pytest.raises(ValueError, match=r"unknown solver option 'ftol'; known: ftol_rel, ftol_abs, xtol_abs, maxiter"):
        sleep_model.fit(optsum_overrides={"ftol": 1e-6})


@pytest.mark.parametrize(
    "key, value", [("ftol_rel", -1e-8), ("maxiter", -3), ("maxfeval", -1), ("xtol_abs", float("nan")), ("ftol_abs", "1e-6")]
)
def test_invalid_solver_option_value(sleep_model, key, value):
    expected = "maxiter" if key == "maxfeval" else key
    with pytest.raises(ValueError, match=rf"solver option '{expected}' must be a finite non-negative number"):
        sleep_model.fit(optsum_overrides={key: value})


def test_solver_option_aliases_are_accepted():
    from jaxmm.model import solver_options

    opts = solver_options({"maxfeval": 50, "ftol_rel": 1e-10})
    assert opts.maxiter == 50 and isinstance(opts.maxiter, int)
    assert opts.ftol_rel == 1e-10


# ---- unfitted and REML models ---------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["theta", "beta", "sigma", "objective", "stderror", "vcov"])
def test_unfitted_model_raises_runtime_error(sleep_model, attribute):
    with pytest.raises(RuntimeError, match=r"not been fitted yet; call \.fit\(\)"):
        getattr(sleep_model, attribute)


@pytest.mark.parametrize("method", ["varcorr", "ranef", "fitted", "summary"])
def test_unfitted_model_methods_raise_runtime_error(sleep_model, method):
    with pytest.raises(RuntimeError, match="not been fitted"):
        getattr(sleep_model, method)()
    assert repr(sleep_model) == "LinearMixedModel('reaction ~ 1 + days + (1 + days | subj)', not fitted)"


def test_loglikelihood_of_reml_fit():
    m = LinearMixedModel("yield ~ 1 + (1 | batch)", jaxmm.dataset("dyestuff"), REML=True).fit()
    assert m.objective == pytest.approx(FIXTURES["dyestuff_REML"]["objective"], rel=1e-8)
    with pytest.raises(ValueError, match=r"log-likelihood is defined for ML fits; refit with REML=False"):
        m.loglikelihood
    m.fit(REML=False)
    assert m.objective == pytest.approx(FIXTURES["dyestuff_ML"]["objective"], rel=1e-8)
    assert m.loglikelihood == pytest.approx(FIXTURES["dyestuff_ML"]["logLik"], rel=1e-8)


# ---- errors that escape from formulaic instead of a one-line ValueError (known bugs) ----------------


def test_syntax_error_in_fixed_part_is_a_value_error(df):
    _raises(r"x\[", "y ~ 1 + x[ + (1 | g)", df)


def test_transformed_string_response_is_a_value_error(df):
    _raises(r"log\(s\)", "log(s) ~ 1 + (1 | g)", df)
