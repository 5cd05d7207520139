"""Bad input: every error is one ValueError line naming the column, level or argument at fault, and
a failed call leaves the model as it was. Two catalogues (model construction; calls on a fitted
model and its bootstrap results), then the missing-value policy, which drops rows instead.

Policy: rows with a missing value (NaN, None) in a column the formula uses, or where a
transformation in the formula gives NaN (log of a negative value), are dropped with a warning
and counted in `m.ndropped`, as lme4's na.omit drops them; an infinite value is an error naming
the column (lme4: "NA/NaN/Inf in 'y'").
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import jaxmm
from jaxmm import LinearMixedModel
from jaxmm.results import MixedModelBootstrap, Replicates

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "lme4_fits.json").read_text())
DY = "yield ~ 1 + (1 | batch)"


def _data() -> pd.DataFrame:
    rng = np.random.default_rng(20240611)
    n = 40
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + 5.0,
            "x": rng.normal(size=n),
            "g": np.repeat(list("abcdefgh"), 5),
            "a": np.repeat(list("pqrs"), 10),
            "b": np.tile(list("uvwxz"), 8),
            "s": ["u"] * n,
            "id": [f"i{i}" for i in range(n)],
            "one": ["A"] * n,
            "unused": rng.normal(size=n),
        }
    )


@pytest.fixture
def df():
    return _data()


def _with(column, value, rows=(3,)):
    """An edit of the data: `value` in `column` on `rows`."""

    def edit(d):
        d.loc[list(rows), column] = value
        return d

    return edit


def _raises(match, formula, data, **kwargs):
    with pytest.raises(ValueError, match=match) as err:
        LinearMixedModel(formula, data, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


# ---- 1. catalogue: building a model ----------------------------------------------------------------
# (formula, edit of the data or None, pattern the one-line message must match)
MODEL_ERRORS = [
    # formula syntax
    pytest.param(
        "y ~ 1 + (1 | g", None, r"formula 'y ~ 1 \+ \(1 \| g' has unbalanced parentheses", id="syntax-parenthesis"
    ),
    pytest.param(
        "y 1 + (1 | g)",
        None,
        r"formula 'y 1 \+ \(1 \| g\)' must have the form 'response ~ terms'",
        id="syntax-no-tilde",
    ),
    pytest.param(
        "y ~ 1 + + x + (1 | g)",
        None,
        r"right-hand side '1 \+ \+ x \+ \(1 \| g\)' has an empty term",
        id="syntax-double-plus",
    ),
    pytest.param("y ~ 1 + x[ + (1 | g)", None, r"cannot evaluate formula 'y ~ 1 \+ x\['", id="syntax-formulaic"),
    pytest.param("y ~ 1 + x", None, r"formula 'y ~ 1 \+ x' has no random-effects term", id="no-random-term"),
    pytest.param(
        "y ~ 1 + x - (1 | g)",
        None,
        r"random-effects term '\(1 \| g\)' cannot be subtracted",
        id="subtracted-random-term",
    ),
    pytest.param(
        "y ~ 1 + (1 | g + s)",
        None,
        r"grouping factor 'g \+ s' in '\(1 \| g \+ s\)' must be column names",
        id="grouping-expression",
    ),
    # unknown columns, wherever they appear
    pytest.param(
        "y ~ 1 + zz + (1 | g)",
        None,
        r"'zz' in formula .* is neither a column of the data .*columns are: y, x, g",
        id="unknown-fixed",
    ),
    pytest.param(
        "y ~ 1 + x + (1 + zz | g)", None, r"'zz' in formula .* is neither a column", id="unknown-random-expression"
    ),
    pytest.param("y ~ 1 + x + (1 | zz)", None, r"'zz' in formula .* is neither a column", id="unknown-grouping"),
    pytest.param(
        "y ~ 1 + x + (1 | g:zz)", None, r"'zz' in formula .* is neither a column", id="unknown-in-interaction"
    ),
    pytest.param("zz ~ 1 + x + (1 | g)", None, r"'zz' in formula .* is neither a column", id="unknown-response"),
    # the response
    pytest.param("s ~ 1 + (1 | g)", None, r"response column 's' is not numeric \(dtype ", id="response-string"),
    pytest.param(
        "y ~ 1 + (1 | g)",
        lambda d: d.assign(y=d.y > 5),
        r"response column 'y' is not numeric \(dtype bool\)",
        id="response-bool",
    ),
    pytest.param("log(s) ~ 1 + (1 | g)", None, r"log\(s\)", id="response-transformed-string"),
    pytest.param(
        "y + x ~ 1 + (1 | g)", None, r"response 'y \+ x' must be a single numeric column", id="response-two-columns"
    ),
    pytest.param(
        "y ~ 1 + x + (1 | g)", _with("y", np.inf), r"response column 'y' has infinite values", id="response-inf"
    ),
    pytest.param(
        "y ~ 1 + x + (1 | g)", _with("y", -np.inf), r"response column 'y' has infinite values", id="response-minus-inf"
    ),
    pytest.param(
        "log(y) ~ 1 + (1 | g)",
        _with("y", 0.0),
        r"response column 'log\(y\)' has infinite values",
        id="response-log-zero",
    ),
    pytest.param(
        "y ~ 1 + (1 | g)",
        lambda d: d.assign(y=3.0),
        r"response 'y' is fitted exactly by the fixed effects \(\(Intercept\)\)",
        id="response-constant",
    ),
    pytest.param(
        "y ~ 1 + x + (1 | g)",
        lambda d: d.assign(y=2 * d.x - 1),
        r"response 'y' is fitted exactly by the fixed effects \(\(Intercept\), x\)",
        id="response-linear-in-x",
    ),
    # predictors
    pytest.param(
        "y ~ 1 + x + (1 | g)",
        _with("x", np.inf, rows=(7,)),
        r"fixed-effects column 'x' has infinite values",
        id="fixed-inf",
    ),
    pytest.param(
        "y ~ 1 + log(x + 10) + (1 | g)",
        _with("x", -10.0),
        r"fixed-effects column 'log\(x \+ 10\)' has infinite values",
        id="fixed-transform-inf",
    ),
    pytest.param(
        "y ~ 1 + (1 + x | g)",
        _with("x", -np.inf, rows=(7,)),
        r"random-effects term for 'g': column 'x' has infinite values",
        id="random-inf",
    ),
    pytest.param(
        "y ~ 1 + id + (1 | g)", None, r"the fixed effects have rank 40 for 40 observations", id="fixed-rank-n"
    ),
    # the data
    pytest.param("y ~ 1 + (1 | g)", lambda d: d.iloc[:0], r"data has no rows", id="data-empty"),
    pytest.param(
        "y ~ 1 + (1 | g)",
        lambda d: None,
        r"data must be a pandas DataFrame \(or a table with .to_pandas\(\).*\), got NoneType",
        id="data-none",
    ),
    pytest.param(
        "y ~ 1 + (1 | g)",
        lambda d: d.to_dict("list"),
        r"data must be a pandas DataFrame \(or a table with .to_pandas\(\).*\), got dict",
        id="data-dict",
    ),
    pytest.param(
        "y ~ 1 + (1 | g)",
        lambda d: d[["y", "x"]].to_numpy(),
        r"data must be a pandas DataFrame \(or a table with .to_pandas\(\).*\), got ndarray",
        id="data-array",
    ),
    pytest.param(
        "y ~ 1 + x + (1 | g)",
        lambda d: d.assign(x=np.nan),
        r"every row has missing values in \['g', 'x', 'y'\]$",
        id="data-all-missing",
    ),
    pytest.param(
        "log(y) ~ 1 + (1 | g)",
        lambda d: d.assign(y=-1.0),
        r"every row has missing values in \['g', 'y'\] or NaN values of log\(y\)",
        id="data-all-undefined",
    ),
    # grouping factors and random effects
    pytest.param(
        "y ~ 1 + (1 | one)",
        None,
        r"grouping factor 'one' has a single level; it needs at least two",
        id="group-one-level",
    ),
    pytest.param(
        "y ~ 1 + (1 | id)", None, r"grouping factor 'id' has 40 levels for 40 observations", id="group-level-per-row"
    ),
    pytest.param(
        "y ~ 1 + (1 | g) + (1 | g:id)",
        None,
        r"grouping factor 'g:id' has 40 levels for 40 observations",
        id="group-interaction-per-row",
    ),
    pytest.param(
        "y ~ 1 + (1 + x | a:b)",
        lambda d: d.iloc[:20],
        r"random-effects term for 'a:b' has 20 random effects for 20 observations",
        id="more-random-effects-than-rows",
    ),
    pytest.param(
        "y ~ 1 + (1 | g) + (1 | g)",
        None,
        r"terms for 'g' repeat a column: \['\(Intercept\)', '\(Intercept\)'\]",
        id="repeated-term",
    ),
    pytest.param(
        "y ~ 1 + (1 | g) + (1 + x | g)",
        None,
        r"terms for 'g' repeat a column: \['\(Intercept\)', '\(Intercept\)', 'x'\]",
        id="repeated-intercept",
    ),
    pytest.param(
        "y ~ 1 + (x | g) + (0 + x | g)",
        None,
        r"terms for 'g' repeat a column: \['\(Intercept\)', 'x', 'x'\]",
        id="repeated-slope",
    ),
    pytest.param(
        "y ~ 1 + (1 | a:b) + (1 | b:a)",
        None,
        r"terms for 'a:b' \(written 'a:b' and 'b:a'\) repeat a column",
        id="interaction-spelled-twice",
    ),
    pytest.param(
        "y ~ 1 + (1 | a/b) + (1 | a:b)", None, r"terms for 'a:b' repeat a column", id="nested-and-interaction"
    ),
    pytest.param("y ~ 1 + (1 | g/g)", None, r"terms for 'g' repeat a column", id="nested-in-itself"),
    pytest.param("y ~ 1 + (0 | g)", None, r"random-effects term for 'g' has no columns", id="random-term-no-columns"),
]


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
@pytest.mark.parametrize("formula, edit, match", MODEL_ERRORS)
def test_model_error(df, formula, edit, match):
    _raises(match, formula, df if edit is None else edit(df))


def test_reml_must_be_a_boolean(df):
    _raises(r"REML must be True or False, got 'no'", "y ~ 1 + (1 | g)", df, REML="no")


def test_drop_leaves_a_single_level(df):
    # Only level 'a' has a complete response: after the drop, 'g' has one level.
    df.loc[5:, "y"] = np.nan
    with pytest.warns(UserWarning, match="dropped 35 of 40 rows"):
        _raises(r"grouping factor 'g' has a single level", "y ~ 1 + (1 | g)", df)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'sleepstudies'; available: cake, cbpp, .*verbagg"):
        jaxmm.dataset("sleepstudies")


# ---- 2. catalogue: calls on a fitted model and its bootstrap results ------------------------------------
class Context:
    """A fitted dyestuff model, a bootstrap result of it (made up: no compilation needed) and files."""

    def __init__(self, folder: Path):
        data = jaxmm.dataset("dyestuff")
        self.dy = jaxmm.fit(DY, data)
        self.samp = MixedModelBootstrap(self.dy, self._replicates(self.dy))
        self.others = {
            "formula": LinearMixedModel("reaction ~ 1 + (1 | subj)", jaxmm.dataset("sleepstudy")),
            "REML": LinearMixedModel(DY, data, REML=True),
            "data": LinearMixedModel(DY, data.assign(**{"yield": data["yield"] + 1.0})),
            "shape": LinearMixedModel("reaction ~ 1 + days + (1 + days | subj)", jaxmm.dataset("sleepstudy")),
        }
        self.files = {
            "saved": folder / "dy.parquet",
            "bytes": folder / "bytes.parquet",
            "truncated": folder / "cut.parquet",
        }
        self.samp.save(self.files["saved"])
        self.files["bytes"].write_bytes(b"PAR1 this is not a parquet file \x00\x01\x02" * 10)
        self.files["truncated"].write_bytes(self.files["saved"].read_bytes()[:200])
        table = pq.read_table(self.files["saved"])
        metadata = table.schema.metadata
        for name, changed in {
            "plain": table.replace_schema_metadata({}),
            "list-metadata": table.replace_schema_metadata({b"jaxmm": b"[1, 2]"}),
            "no-theta": table.drop_columns(["θ1"]).replace_schema_metadata(metadata),
        }.items():
            self.files[name] = folder / f"{name}.parquet"
            pq.write_table(changed, self.files[name])

    @staticmethod
    def _replicates(m) -> Replicates:
        reps = Replicates.empty(20, m)
        rng = np.random.default_rng(0)
        reps.objective[:], reps.sigma[:], reps.theta[:] = (
            rng.normal(size=20) + 300,
            rng.gamma(9, size=20),
            rng.gamma(2, size=(20, 1)),
        )
        reps.beta[:] = rng.normal(size=(20, 1)) + 1500
        return reps


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("files"))


def _boot(c, nsamp=5, **kwargs):
    return jaxmm.parametricbootstrap(
        kwargs.pop("rng", 1), nsamp, kwargs.pop("m", c.dy), kwargs.pop("ftype", np.float64), progress=False, **kwargs
    )


# (call on the context, pattern the one-line message must match)
CALL_ERRORS = [
    # fit
    pytest.param(lambda c: c.dy.fit(theta0=[1.0, 1.0]), r"^theta0 must have length 1, got 2$", id="fit-theta0-length"),
    pytest.param(
        lambda c: c.dy.fit(theta0=np.ones((2, 2))), r"^theta0 must have length 1, got 4$", id="fit-theta0-matrix"
    ),
    pytest.param(
        lambda c: c.dy.fit(theta0=[-1.0]),
        r"theta0 must be finite with diagonal elements >= 0, got \[-1.0\]",
        id="fit-theta0-negative",
    ),
    pytest.param(lambda c: c.dy.fit(theta0=[np.nan]), r"theta0 must be finite", id="fit-theta0-nan"),
    pytest.param(lambda c: c.dy.fit(REML=1), r"REML must be True or False, got 1", id="fit-reml-int"),
    pytest.param(
        lambda c: c.dy.fit(optsum_overrides={"ftol": 1e-6}),
        r"unknown solver option 'ftol'; known: ftol_rel, ftol_abs, xtol_abs, maxiter",
        id="fit-unknown-option",
    ),
    pytest.param(
        lambda c: c.dy.fit(optsum_overrides={"ftol_rel": -1e-8}),
        r"solver option 'ftol_rel' must be a finite non-negative number",
        id="fit-option-negative",
    ),
    pytest.param(
        lambda c: c.dy.fit(optsum_overrides={"maxfeval": -1}),
        r"solver option 'maxiter' must be a finite non-negative number",
        id="fit-maxfeval-negative",
    ),
    pytest.param(
        lambda c: c.dy.fit(optsum_overrides={"xtol_abs": float("nan")}),
        r"solver option 'xtol_abs' must be",
        id="fit-option-nan",
    ),
    pytest.param(
        lambda c: c.dy.fit(optsum_overrides={"ftol_abs": "1e-6"}),
        r"solver option 'ftol_abs' must be",
        id="fit-option-string",
    ),
    pytest.param(
        lambda c: c.others["REML"].loglikelihood,
        r"log-likelihood is defined for ML fits; refit with REML=False",
        id="loglikelihood-reml",
    ),
    # parametricbootstrap
    pytest.param(lambda c: _boot(c, nsamp=0), r"nsamp must be a positive integer, got 0", id="boot-nsamp-zero"),
    pytest.param(lambda c: _boot(c, nsamp=-3), r"nsamp must be a positive integer, got -3", id="boot-nsamp-negative"),
    pytest.param(lambda c: _boot(c, nsamp=2.5), r"nsamp must be a positive integer, got 2.5", id="boot-nsamp-float"),
    pytest.param(lambda c: _boot(c, theta=[1.0, 0.0]), r"theta must have length 1, got 2", id="boot-theta-length"),
    pytest.param(
        lambda c: _boot(c, theta=[-1.0]), r"theta must be finite with diagonal elements >= 0", id="boot-theta-negative"
    ),
    pytest.param(lambda c: _boot(c, theta=[np.nan]), r"theta must be finite", id="boot-theta-nan"),
    pytest.param(
        lambda c: _boot(c, beta=[1.0, 2.0]),
        r"beta must hold 1 finite values \(one per coefficient: \(Intercept\)\), got \[1.0, 2.0\]",
        id="boot-beta-length",
    ),
    pytest.param(lambda c: _boot(c, beta=[np.inf]), r"beta must hold 1 finite values", id="boot-beta-inf"),
    pytest.param(
        lambda c: _boot(c, sigma=0.0), r"sigma must be a finite positive number, got 0.0", id="boot-sigma-zero"
    ),
    pytest.param(
        lambda c: _boot(c, sigma=-1.0), r"sigma must be a finite positive number, got -1.0", id="boot-sigma-negative"
    ),
    pytest.param(
        lambda c: _boot(c, sigma=np.nan), r"sigma must be a finite positive number, got nan", id="boot-sigma-nan"
    ),
    pytest.param(lambda c: _boot(c, rng="abc"), r"rng must be an int seed or a JAX PRNG key, got 'abc'", id="boot-rng"),
    pytest.param(
        lambda c: _boot(c, batch_size=0), r"batch_size must be a positive integer, got 0", id="boot-batch-size"
    ),
    pytest.param(
        lambda c: _boot(c, ftype=np.int32), r"ftype must be np.float16, np.float32 or np.float64", id="boot-ftype"
    ),
    pytest.param(lambda c: _boot(c, m=c.others["REML"]), r"m must be a fitted LinearMixedModel", id="boot-unfitted"),
    # intervals
    pytest.param(
        lambda c: jaxmm.shortestcovint([1.0, 2.0], 1.0),
        r"level must be strictly between 0 and 1, got 1.0",
        id="shortestcovint-level-one",
    ),
    pytest.param(
        lambda c: jaxmm.shortestcovint([1.0, 2.0], -0.5),
        r"level must be strictly between 0 and 1, got -0.5",
        id="shortestcovint-level-negative",
    ),
    pytest.param(
        lambda c: jaxmm.shortestcovint([np.nan], 0.9),
        r"shortestcovint needs at least one non-missing value",
        id="shortestcovint-all-nan",
    ),
    pytest.param(
        lambda c: c.samp.shortestcovint(0.0),
        r"level must be strictly between 0 and 1, got 0.0",
        id="samp-shortestcovint-level",
    ),
    pytest.param(
        lambda c: c.samp.confint(95), r"level must be strictly between 0 and 1, got 95", id="confint-level-percent"
    ),
    pytest.param(
        lambda c: c.samp.confint(method="bca"),
        r"method must be 'shortest' or 'equaltail', got 'bca'",
        id="confint-method",
    ),
    # combining bootstraps
    pytest.param(
        lambda c: jaxmm.vcat(c.samp, MixedModelBootstrap(c.others["formula"], c.samp.replicates)),
        r"different models: their formula differ",
        id="vcat-formula",
    ),
    pytest.param(
        lambda c: jaxmm.vcat([c.samp, MixedModelBootstrap(c.others["REML"], c.samp.replicates)]),
        r"different models: their REML differ \(False vs True\)",
        id="vcat-reml",
    ),
    pytest.param(
        lambda c: jaxmm.vcat(c.samp, MixedModelBootstrap(c.others["data"], c.samp.replicates)),
        r"different models: their data differ",
        id="vcat-data",
    ),
    pytest.param(lambda c: jaxmm.vcat(c.samp, c.samp.tbl), r"vcat takes MixedModelBootstrap objects", id="vcat-table"),
    pytest.param(lambda c: jaxmm.vcat([]), r"vcat takes MixedModelBootstrap objects", id="vcat-empty"),
    # files
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["saved"], c.others["shape"]),
        r"dy.parquet holds a bootstrap of another model: its formula is 'yield",
        id="restore-other-model",
    ),
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["saved"], c.others["REML"]),
        r"another model: its REML is False, the model's is True",
        id="restore-reml-model",
    ),
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["bytes"], c.dy),
        r"bytes.parquet is not a jaxmm bootstrap file",
        id="restore-not-parquet",
    ),
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["truncated"], c.dy),
        r"cut.parquet is not a jaxmm bootstrap file",
        id="restore-truncated",
    ),
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["plain"], c.dy),
        r"plain.parquet is not a jaxmm bootstrap file: it has no jaxmm metadata",
        id="restore-no-metadata",
    ),
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["list-metadata"], c.dy),
        r"is not a jaxmm bootstrap file: its jaxmm metadata is a list",
        id="restore-bad-metadata",
    ),
    pytest.param(
        lambda c: jaxmm.restorereplicates(c.files["no-theta"], c.dy),
        r"no-theta.parquet is damaged: it has no column 'θ1'",
        id="restore-missing-column",
    ),
]


@pytest.mark.parametrize("call, match", CALL_ERRORS)
def test_call_error(ctx, call, match):
    optsum, reml, tbl = ctx.dy.optsum, ctx.dy.REML, ctx.samp.tbl
    with pytest.raises(ValueError, match=match) as err:
        call(ctx)
    assert "\n" not in str(err.value)
    # nothing is lost: the fit and the results are as they were
    assert ctx.dy.optsum is optsum and ctx.dy.REML == reml
    pd.testing.assert_frame_equal(ctx.samp.tbl, tbl)


def test_the_saved_file_itself_restores(ctx):
    """The damaged files above are damaged copies of a good one."""
    back = jaxmm.restorereplicates(ctx.files["saved"], ctx.dy)
    pd.testing.assert_frame_equal(back.tbl, ctx.samp.tbl, check_exact=True)


def test_missing_file_is_file_not_found(ctx, tmp_path):
    with pytest.raises(FileNotFoundError):
        jaxmm.restorereplicates(tmp_path / "nowhere.parquet", ctx.dy)


# ---- unfitted models ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sleep_model():
    return LinearMixedModel("reaction ~ 1 + days + (1 + days | subj)", jaxmm.dataset("sleepstudy"))


@pytest.mark.parametrize("attribute", ["theta", "beta", "sigma", "objective", "stderror", "vcov"])
def test_unfitted_model_raises_runtime_error(sleep_model, attribute):
    with pytest.raises(RuntimeError, match=r"not been fitted yet; call \.fit\(\)"):
        getattr(sleep_model, attribute)


@pytest.mark.parametrize("method", ["varcorr", "ranef", "fitted", "summary"])
def test_unfitted_model_methods_raise_runtime_error(sleep_model, method):
    with pytest.raises(RuntimeError, match="not been fitted"):
        getattr(sleep_model, method)()
    assert repr(sleep_model) == "LinearMixedModel('reaction ~ 1 + days + (1 + days | subj)', not fitted)"


def test_refit_switches_between_reml_and_ml():
    m = LinearMixedModel(DY, jaxmm.dataset("dyestuff"), REML=True).fit()
    assert m.objective == pytest.approx(FIXTURES["dyestuff_REML"]["objective"], rel=1e-8)
    m.fit(REML=False)
    assert m.objective == pytest.approx(FIXTURES["dyestuff_ML"]["objective"], rel=1e-8)
    assert m.loglikelihood == pytest.approx(FIXTURES["dyestuff_ML"]["logLik"], rel=1e-8)


# ---- 3. missing values: dropped with a warning, counted ------------------------------------------------------
def test_rows_missing_a_predictor_are_dropped_with_warning(df):
    df.loc[[3, 17, 29], "x"] = np.nan
    with pytest.warns(UserWarning, match=r"dropped 3 of 40 rows with missing values in \['g', 'x', 'y'\]$"):
        m = LinearMixedModel("y ~ 1 + x + (1 | g)", df)
    assert m.ndropped == 3
    assert m.nobs == 37
    np.testing.assert_array_equal(m.design.y, df.y.drop(index=[3, 17, 29]).to_numpy())
    assert "(3 rows with missing values dropped)" in m.fit().summary()


def test_rows_missing_response_or_group_are_dropped(df):
    df.loc[0, "y"] = np.nan
    df["g"] = df["g"].astype(object)
    df.loc[[5, 6], "g"] = None
    with pytest.warns(UserWarning, match=r"dropped 3 of 40 rows"):
        m = LinearMixedModel("y ~ 1 + (1 | g)", df)
    assert (m.ndropped, m.nobs) == (3, 37)
    assert m.structure.terms[0].nlevels == 8


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(
    "formula, column, columns",
    [
        ("log(y) ~ 1 + x + (1 | g)", "y", r"\['g', 'x', 'y'\] or NaN values of log\(y\)"),
        ("y ~ 1 + log(x + 3) + (1 | g)", "x", r"\['g', 'x', 'y'\] or NaN values of log\(x \+ 3\)"),
        ("y ~ 1 + (1 + np.sqrt(x + 3) | g)", "x", r"\['g', 'x', 'y'\] or NaN values of np.sqrt\(x \+ 3\)"),
    ],
    ids=["response", "fixed", "random"],
)
def test_rows_where_a_transformation_is_nan_are_dropped(df, formula, column, columns):
    """lme4 evaluates the transformations, then na.omit drops the rows that came out NaN."""
    df.loc[[4, 9], column] = -5.0
    df.loc[12, "x"] = np.nan
    with pytest.warns(UserWarning, match=rf"dropped 3 of 40 rows with missing values in {columns}$"):
        m = LinearMixedModel(formula, df)
    assert (m.ndropped, m.nobs) == (3, 37)
    np.testing.assert_array_equal(m.design.matrices.refs[0], np.repeat(np.arange(8), 5)[df.index.drop([4, 9, 12])])


def test_missing_value_in_unused_column_drops_nothing(df):
    df.loc[[1, 2], "unused"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = LinearMixedModel("y ~ 1 + x + (1 | g)", df)
    assert (m.ndropped, m.nobs) == (0, 40)


# ---- 4. what lme4 accepts is accepted --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "formula", ["y ~ 1 + x + -1 + (1 | g)", "y ~ 1 + x - 1 + (1 | g)", "y ~ 0 + x + (1 | g)", "y ~ -1 + x + (1 | g)"]
)
def test_ways_to_remove_the_intercept(df, formula):
    assert LinearMixedModel(formula, df).coefnames == ("x",)


def test_interaction_grouping_in_either_order_is_one_factor(df):
    m = LinearMixedModel("y ~ 1 + (1 | g:a) + (0 + x | a:g)", df)
    (term,) = m.structure.terms
    assert (term.group, term.columns, term.nlevels) == ("g:a", ("(Intercept)", "x"), 8)
    assert LinearMixedModel("y ~ 1 + (1 | g:g)", df).structure.terms[0].group == "g"
