"""Real data that is not shaped like the examples: each case gives the right answer or a clear one-line
error, never a different model. Names instead of positions, dropped columns announced, a column
named Intercept, binomial and bernoulli responses, other table types, duplicated replicates, seeds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _helpers import same
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmm
from jaxmm.bootstrap import simulated_responses

SLEEP = "reaction ~ 1 + days + (1 + days|subj)"


@pytest.fixture(scope="module")
def sleep():
    return jaxmm.dataset("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return jaxmm.fit(SLEEP, sleep)


@pytest.fixture(scope="module")
def cbpp():
    d = jaxmm.dataset("cbpp")
    return d.assign(prop=d["incidence"] / d["size"])


# ---- names, not positions ---------------------------------------------------------------------
def test_beta_theta_sigma_by_name_equal_the_same_values_by_position(sleep_fit):
    m = sleep_fit
    beta = m.beta.to_numpy()[::-1].copy()  # a reordered Series must be matched by name, not position
    by_name = pd.Series(beta, index=m.coefnames[::-1])
    theta = {name: v for name, v in reversed(list(zip(m.thetanames, m.theta * 1.1)))}
    a = jaxmm.parametricbootstrap(3, 20, m, beta=by_name, theta=theta, sigma={"σ": 20.0}, progress=False)
    b = jaxmm.parametricbootstrap(3, 20, m, beta=m.beta.to_numpy(), theta=m.theta * 1.1, sigma=20.0, progress=False)
    assert same(a.objective, b.objective) and same(a.replicates.beta, b.replicates.beta)
    assert m.thetanames == ["θ1", "θ2", "θ3"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": {"(Intercept)": 250.0, "day": 10.0}}, r"beta has no component named 'day'; its names are"),
        ({"beta": {"(Intercept)": 250.0}}, r"beta given by name must name each of \(Intercept\), days once"),
        ({"theta": {"θ1": 1.0, "θ2": 0.0}}, r"theta given by name must name each of θ1, θ2, θ3 once; 'θ3' is missing"),
        ({"theta": pd.Series([1.0, 0.0, 1.0], index=["a", "b", "c"])}, r"theta has no component named 'a'"),
        ({"sigma": {"sigma": 2.0}}, r"sigma has no component named 'sigma'; its names are σ"),
    ],
)
def test_unknown_or_missing_names_are_errors(sleep_fit, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jaxmm.parametricbootstrap(1, 2, sleep_fit, progress=False, **kwargs)


def test_theta0_by_name(sleep):
    m = jaxmm.LinearMixedModel(SLEEP, sleep).fit(theta0={"θ3": 0.5, "θ1": 0.5, "θ2": 0.0})
    assert m.optsum.initial.tolist() == [0.5, 0.0, 0.5]


# ---- dropped columns, the intercept --------------------------------------------------------------
def test_rank_deficient_columns_are_announced_by_name(sleep):
    with pytest.warns(UserWarning, match=r"rank deficient so dropping 1 column\(s\) / coefficient\(s\): 'days2'"):
        m = jaxmm.fit("reaction ~ 1 + days + days2 + (1|subj)", sleep.assign(days2=2 * sleep["days"]))
    assert m.estimable.to_dict() == {"(Intercept)": True, "days": True, "days2": False}
    assert str(m.beta["days2"]) == "-0.0"


@pytest.mark.parametrize("formula", ["reaction ~ 1 + Intercept + (1|subj)", "reaction ~ 1 + (1 + Intercept|subj)"])
def test_a_column_named_intercept_is_refused_not_merged(sleep, formula):
    data = sleep.assign(Intercept=np.random.default_rng(0).normal(size=len(sleep)))
    with pytest.raises(ValueError, match=r"uses a variable named 'Intercept', which the formula engine would merge"):
        jaxmm.fit(formula, data)


def test_a_column_named_parenthesised_intercept_stays_a_column_of_its_own(sleep):
    data = sleep.assign(**{"(Intercept)": np.random.default_rng(0).normal(size=len(sleep))})
    m = jaxmm.fit("reaction ~ 1 + Q('(Intercept)') + (1|subj)", data)
    assert len(m.coefnames) == 2 and m.estimable.all() and m.coefnames[0] == "(Intercept)"


# ---- binomial and bernoulli responses ------------------------------------------------------------
def test_a_binomial_proportion_must_be_whole_successes(cbpp):
    bad = cbpp.assign(prop=cbpp["prop"].where(cbpp.index != 3, 0.123))
    with pytest.raises(ValueError, match=r"must be whole numbers of successes for family 'binomial'; row 3 has"):
        jaxmm.fit("prop ~ 1 + period + (1|herd)", bad, family="binomial", weights="size")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        jaxmm.fit("incidence ~ 1 + period + (1|herd)", cbpp, family="binomial", weights="size")


@pytest.mark.parametrize("encode", ["bool", "strings", "categorical"])
def test_a_bernoulli_response_may_be_bool_or_two_levels(encode):
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(30), 8)
    x = rng.normal(size=g.size)
    y = rng.random(g.size) < 1 / (1 + np.exp(-(0.3 + 0.8 * x + rng.normal(size=30)[g])))
    reference = jaxmm.fit("y ~ 1 + x + (1|g)", pd.DataFrame({"y": y.astype(float), "x": x, "g": g}), family="bernoulli")
    coded = {
        "bool": y,
        "strings": np.where(y, "yes", "no"),  # sorted levels no < yes: "no" the failure
        "categorical": pd.Categorical(np.where(y, "hit", "miss"), categories=["miss", "hit"]),
    }[encode]
    m = jaxmm.fit("y ~ 1 + x + (1|g)", pd.DataFrame({"y": coded, "x": x, "g": g}), family="bernoulli")
    assert m.objective == reference.objective and same(m.theta, reference.theta)


def test_a_bernoulli_response_with_three_levels_is_an_error():
    d = pd.DataFrame({"y": list("abc") * 10, "g": np.repeat(np.arange(10), 3)})
    with pytest.raises(ValueError, match=r"response 'y' of family 'bernoulli' must have two levels .* got 3: a, b, c"):
        jaxmm.fit("y ~ 1 + (1|g)", d, family="bernoulli")


# ---- other tables, repeated names ----------------------------------------------------------------
def test_a_pyarrow_table_is_converted(sleep, sleep_fit):
    m = jaxmm.fit(SLEEP, pa.Table.from_pandas(sleep))
    assert m.objective == sleep_fit.objective


def test_a_table_without_to_pandas_and_repeated_column_names_are_errors(sleep):
    with pytest.raises(ValueError, match=r"data must be a pandas DataFrame \(or a table with .to_pandas\(\)"):
        jaxmm.fit(SLEEP, sleep.to_dict())
    twice = pd.concat([sleep, sleep[["days"]]], axis=1)
    with pytest.raises(ValueError, match=r"data has more than one column named 'days'; column names must be unique"):
        jaxmm.fit(SLEEP, twice)


# ---- replicates are not combined with themselves; seeds -----------------------------------------
def test_vcat_refuses_bootstraps_that_share_replicates(sleep_fit, tmp_path):
    a = jaxmm.parametricbootstrap(5, 30, sleep_fit, progress=False)
    b = jaxmm.parametricbootstrap(5, 10, sleep_fit, progress=False)
    c = jaxmm.parametricbootstrap(6, 10, sleep_fit, progress=False)
    with pytest.raises(ValueError, match=r"share replicates 0..9 \(the same seed\)"):
        jaxmm.vcat(a, b)
    both = jaxmm.vcat(a, c)
    assert len(both) == 40 and len(both.provenance) == 2
    a.save(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"share replicates 0..29"):
        jaxmm.vcat(jaxmm.restorereplicates(tmp_path / "a.parquet", sleep_fit), a)


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.integers(2**63, 2**80), st.integers(-(2**80), -(2**63) - 1)))
def test_a_seed_outside_64_bits_is_a_one_line_error(sleep_fit, seed):
    with pytest.raises(ValueError, match=r"rng must be an int seed from -2\*\*63 to 2\*\*63 - 1"):
        jaxmm.parametricbootstrap(seed, 2, sleep_fit, progress=False)


def test_large_seeds_inside_64_bits_work(sleep_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samp = jaxmm.parametricbootstrap(2**63 - 1, 3, sleep_fit, progress=False)
    assert samp.converged.all()


# ---- files: the extension names the format; damage is detected on restore -------------------------
@pytest.fixture(scope="module")
def small_boot(sleep_fit):
    return jaxmm.parametricbootstrap(8, 25, sleep_fit, progress=False)


@pytest.mark.parametrize("name", ["reps.parquet", "reps.arrow", "reps.feather"])
def test_restorable_formats_round_trip(small_boot, sleep_fit, tmp_path, name):
    small_boot.save(tmp_path / name)
    back = jaxmm.restorereplicates(tmp_path / name, sleep_fit)
    pd.testing.assert_frame_equal(back.tbl, small_boot.tbl, check_exact=True)
    assert same(back.replicates.niter, small_boot.replicates.niter) and back.provenance == small_boot.provenance


def test_csv_holds_the_table_and_other_extensions_are_refused(small_boot, sleep_fit, tmp_path):
    small_boot.save(tmp_path / "reps.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reps.csv"), small_boot.tbl, check_exact=False, rtol=1e-12)
    with pytest.raises(ValueError, match=r"reps.csv is a table \(samp.tbl\), not restorable"):
        jaxmm.restorereplicates(tmp_path / "reps.csv", sleep_fit)
    with pytest.raises(ValueError, match=r"reps.xlsx: a bootstrap file must end in .parquet, .arrow, .feather or .csv"):
        small_boot.save(tmp_path / "reps.xlsx")


def _rewrite(path, edit):
    """Rewrite a saved file's table through `edit`, keeping its metadata (checksum included)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(
        pa.Table.from_pandas(edit(table.to_pandas()), preserve_index=False).replace_schema_metadata(
            table.schema.metadata
        ),
        path,
    )


def test_a_changed_value_or_a_lost_row_is_detected(small_boot, sleep_fit, tmp_path):
    path = tmp_path / "reps.parquet"
    small_boot.save(path)
    _rewrite(path, lambda df: df.assign(objective=df["objective"].where(df.index != 4, df["objective"] + 1e-9)))
    with pytest.raises(ValueError, match=r"is damaged: its contents do not match the checksum"):
        jaxmm.restorereplicates(path, sleep_fit)
    small_boot.save(path)
    _rewrite(path, lambda df: df.iloc[:-1])
    with pytest.raises(ValueError, match=r"is damaged: it has 24 replicates, it was written with 25"):
        jaxmm.restorereplicates(path, sleep_fit)


def test_values_no_bootstrap_can_have_are_detected(small_boot, sleep_fit, tmp_path):
    from jaxmm import io

    bad = small_boot.replicates.astype(np.float64)
    bad.theta[3, 0] = -0.5  # a standard deviation's factor below its bound 0
    io.save_replicates(tmp_path / "bad.parquet", bad, sleep_fit, small_boot.sim, None, small_boot.provenance)
    with pytest.raises(ValueError, match=r"bad.parquet is damaged: replicate 3 has theta below its lower bound"):
        jaxmm.restorereplicates(tmp_path / "bad.parquet", sleep_fit)
    bad = small_boot.replicates.astype(np.float64)
    bad.objective[7] = np.nan
    io.save_replicates(tmp_path / "nan.parquet", bad, sleep_fit, small_boot.sim, None, small_boot.provenance)
    with pytest.raises(ValueError, match=r"replicate 7 is converged but not finite"):
        jaxmm.restorereplicates(tmp_path / "nan.parquet", sleep_fit)


# ---- units and offsets: fits are equivariant ------------------------------------------------------
# A transformed column is rounded to float64 when it is made: y' = fl(a y + b) holds y only to about
# |b| 1e-16 / |a|. The reference is the fit of the column mapped back, (y' - b) / a, which carries the
# same rounding, so that what is compared is jaxmm's arithmetic, not the data's.
SCALES = st.tuples(st.floats(-6, 9), st.sampled_from([1.0, -1.0]))
OFFSETS = st.tuples(st.floats(0, 10), st.sampled_from([0.0, 1.0, -1.0]))


def _affine(values: np.ndarray, scale, offset) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(a values + b, its mapping back, a, b) for a = sign 10^e and b = sign 10^f sd(values) a."""
    (e, sign), (f, offset_sign) = scale, offset
    a = sign * 10.0**e
    b = offset_sign * 10.0**f * values.std() * abs(a)
    moved = a * values + b
    return moved, (moved - b) / a, a, b


def _rel(x, y):
    return np.max(np.abs(np.asarray(x) - np.asarray(y)) / np.maximum(np.abs(np.asarray(y)), 1e-300))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(SCALES, OFFSETS)
def test_a_response_in_other_units_and_offsets_gives_the_same_model(sleep, scale, offset):
    y = sleep["reaction"].to_numpy()
    moved, back, a, b = _affine(y, scale, offset)
    m = jaxmm.fit(SLEEP, sleep.assign(reaction=moved))
    ref = jaxmm.fit(SLEEP, sleep.assign(reaction=back))
    assert m.optsum.converged and ref.optsum.converged
    assert abs(m.objective - (ref.objective + 2 * m.nobs * np.log(abs(a)))) <= 1e-8 * abs(m.objective)
    assert _rel(m.theta, ref.theta) <= 1e-6  # theta is flat at the optimum: 1e-6 of it moves the criterion by ~1e-12
    assert _rel(m.sigma, abs(a) * ref.sigma) <= 1e-8
    assert _rel(m.beta["days"], a * ref.beta["days"]) <= 1e-8
    assert _rel(m.beta["(Intercept)"], a * ref.beta["(Intercept)"] + b) <= 1e-8
    assert _rel(m.stderror, abs(a) * ref.stderror) <= 1e-6


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(SCALES, OFFSETS)
def test_a_predictor_in_other_units_and_offsets_gives_the_same_model(sleep, scale, offset):
    x = sleep["days"].to_numpy(dtype=float)
    moved, back, c, d = _affine(x, scale, offset)
    formula = "reaction ~ 1 + days + (1|subj)"
    m = jaxmm.fit(formula, sleep.assign(days=moved))
    ref = jaxmm.fit(formula, sleep.assign(days=back))
    assert m.optsum.converged and m.estimable.all()  # never dropped as aliased with the intercept
    assert abs(m.objective - ref.objective) <= 1e-8 * abs(ref.objective)
    assert _rel(m.theta, ref.theta) <= 1e-6
    assert _rel(m.beta["days"], ref.beta["days"] / c) <= 1e-8
    intercept = ref.beta["(Intercept)"] - ref.beta["days"] * d / c
    assert abs(m.beta["(Intercept)"] - intercept) <= 1e-8 * (abs(intercept) + abs(ref.beta["days"] * d / c))


def test_the_examples_of_the_issue(sleep):
    """y + 1e6 and y + 1e8 converge to the same fit (they stopped unconverged, or at NaN), and a Unix
    time as a predictor is not dropped as aliased with the intercept; REML shifts by 2 log|c|."""
    m = jaxmm.fit(SLEEP, sleep)
    for shift in (1e6, 1e8):
        moved = jaxmm.fit(SLEEP, sleep.assign(reaction=sleep["reaction"] + shift))
        assert moved.optsum.converged and abs(moved.objective - m.objective) <= 1e-9 * m.objective
        assert abs(moved.beta["(Intercept)"] - shift - m.beta["(Intercept)"]) <= 1e-6
    unix = sleep.assign(days=sleep["days"] * 86400.0 + 1.7e9)
    reml = jaxmm.fit("reaction ~ 1 + days + (1|subj)", sleep, REML=True)
    moved = jaxmm.fit("reaction ~ 1 + days + (1|subj)", unix, REML=True)
    assert moved.estimable.all()
    assert abs(moved.objective - (reml.objective + 2 * np.log(86400.0))) <= 1e-9 * reml.objective
    assert abs(moved.beta["days"] * 86400.0 - reml.beta["days"]) <= 1e-9 * abs(reml.beta["days"])


def test_a_bootstrap_in_other_units_is_the_same_bootstrap(sleep):
    m = jaxmm.fit(SLEEP, sleep)
    a, b = 1e-3, 1e6
    moved = jaxmm.fit(SLEEP, sleep.assign(reaction=a * sleep["reaction"] + b))
    one = jaxmm.parametricbootstrap(11, 40, m, progress=False)
    two = jaxmm.parametricbootstrap(11, 40, moved, progress=False)
    assert one.converged.all() and two.converged.all()
    np.testing.assert_allclose(two.objective, one.objective + 2 * m.nobs * np.log(a), rtol=1e-8)
    np.testing.assert_allclose(two.replicates.sigma, a * one.replicates.sigma, rtol=1e-6)
    np.testing.assert_allclose(two.replicates.beta[:, 1], a * one.replicates.beta[:, 1], rtol=1e-6)


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(SCALES, OFFSETS)
def test_a_glmm_predictor_in_other_units_gives_the_same_model(scale, offset):
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(20), 6)
    x = rng.normal(size=g.size)
    counts = rng.poisson(np.exp(0.5 + 0.4 * x + 0.5 * rng.normal(size=20)[g]))
    moved, back, c, d = _affine(x, scale, offset)
    m = jaxmm.fit("y ~ 1 + x + (1|g)", pd.DataFrame({"y": counts, "x": moved, "g": g}), family="poisson")
    ref = jaxmm.fit("y ~ 1 + x + (1|g)", pd.DataFrame({"y": counts, "x": back, "g": g}), family="poisson")
    assert m.optsum.converged
    assert abs(m.objective - ref.objective) <= 1e-8 * abs(ref.objective)
    assert _rel(m.beta["x"], ref.beta["x"] / c) <= 1e-6
    assert _rel(m.stderror["x"], ref.stderror["x"] / abs(c)) <= 1e-5


# ---- long runs lose nothing: checkpoints --------------------------------------------------------
def test_an_interrupted_bootstrap_resumes_bit_identically(sleep_fit, tmp_path, monkeypatch):
    from jaxmm.bootstrap.checkpoint import Checkpoint

    path = tmp_path / "run.ckpt"
    whole = jaxmm.parametricbootstrap(21, 300, sleep_fit, progress=False)
    record, calls = Checkpoint.record, []

    def interrupted(self, *args):
        calls.append(1)
        record(self, *args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        jaxmm.parametricbootstrap(21, 300, sleep_fit, progress=False, checkpoint=path)
    monkeypatch.setattr(Checkpoint, "record", record)
    with np.load(path) as saved:
        assert 0 < saved["done"].sum() < 300
    resumed = jaxmm.parametricbootstrap(21, 300, sleep_fit, progress=False, checkpoint=path)
    pd.testing.assert_frame_equal(resumed.tbl, whole.tbl, check_exact=True)
    assert same(resumed.replicates.niter, whole.replicates.niter) and resumed.provenance == whole.provenance
    again = jaxmm.parametricbootstrap(21, 300, sleep_fit, progress=False, checkpoint=path)  # nothing left to fit
    pd.testing.assert_frame_equal(again.tbl, whole.tbl, check_exact=True)
    with pytest.raises(ValueError, match=r"run.ckpt is of another run: its key is"):
        jaxmm.parametricbootstrap(22, 300, sleep_fit, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"no such directory"):
        jaxmm.parametricbootstrap(22, 300, sleep_fit, progress=False, checkpoint=tmp_path / "nope" / "x.ckpt")


def test_ctrl_c_stops_within_two_seconds_keeping_what_is_done(tmp_path):
    """A real SIGINT to `jaxmm bootstrap --checkpoint` while it runs: it stops within 2 s, exit status
    130, with the replicates finished so far in the checkpoint (resuming is tested above)."""
    import signal
    import subprocess
    import sys
    import time

    ckpt = tmp_path / "boot.ckpt"
    formula = "reaction ~ 1 + days + (1 + days | subj)"
    cmd = [sys.executable, "-m", "jaxmm", "bootstrap", "--dataset", "sleepstudy", "-f", formula, "-n", "200000"]
    proc = subprocess.Popen([*cmd, "--checkpoint", str(ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    proc.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0
    assert proc.returncode == 130
    with np.load(ckpt) as saved:
        done = int(saved["done"].sum())
    assert 0 < done < 200000


def test_a_glmm_bootstrap_with_a_predictor_in_other_units_is_the_same_bootstrap():
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(15), 6)
    x = rng.normal(size=g.size)
    counts = rng.poisson(np.exp(0.3 + 0.5 * x + 0.4 * rng.normal(size=15)[g]))
    moved, back, c, d = _affine(x, (3.0, 1.0), (6.0, 1.0))
    fits = [
        jaxmm.fit("y ~ 1 + x + (1|g)", pd.DataFrame({"y": counts, "x": v, "g": g}), family="poisson")
        for v in (moved, back)
    ]
    one, two = (jaxmm.parametricbootstrap(5, 24, m, progress=False) for m in fits)
    assert one.converged.all() and two.converged.all()
    np.testing.assert_allclose(one.objective, two.objective, rtol=1e-8)
    np.testing.assert_allclose(one.replicates.beta[:, 1], two.replicates.beta[:, 1] / c, rtol=1e-6)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(st.floats(-6, 9), st.booleans())
def test_a_random_slope_in_other_units_gives_the_same_model(sleep, exponent, correlated):
    """days -> c days in (1 + days | subj) or (1 + days || subj): the same criterion, the slope's
    standard deviation divided by c, its correlation with the intercept unchanged."""
    c = 10.0**exponent
    formula = SLEEP if correlated else "reaction ~ 1 + days + (1 + days || subj)"
    m = jaxmm.fit(formula, sleep)
    moved = jaxmm.fit(formula, sleep.assign(days=c * sleep["days"].astype(float)))
    assert moved.optsum.converged
    assert abs(moved.objective - m.objective) <= 1e-9 * m.objective
    vc, vc_moved = m.varcorr(), moved.varcorr()
    assert _rel(vc_moved["sdcor"][1] * c, vc["sdcor"][1]) <= 1e-6
    assert abs(vc_moved["sdcor"][2] - vc["sdcor"][2]) <= 1e-6 * (1 if correlated else vc["sdcor"][2])


def _cov_at(m, at: float) -> tuple[float, float]:
    """(Var(b0 + b1 at), Var(b1)) of the model's (1 + x | g) term, from theta = (l11, l21, l22) of its
    factor lambda: s^2 |(l11 + at l21, at l22)|^2 and s^2 |(l21, l22)|^2 (in this form, not from the
    variance components, whose difference at a far point cancels to a few digits)."""
    l11, l21, l22 = m.theta
    return m.sigma**2 * ((l11 + at * l21) ** 2 + (at * l22) ** 2), m.sigma**2 * (l21**2 + l22**2)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(SCALES, OFFSETS)
def test_a_correlated_random_slope_with_an_offset_gives_the_same_model(sleep, scale, offset):
    """days -> c days + d in (1 + days | subj): the same model (a change of origin of a correlated
    term's column is a reparametrisation), with the slope's variance divided by c^2 and the
    intercept's variance at the same point in time unchanged; the fit centres the column itself."""
    x = sleep["days"].to_numpy(dtype=float)
    moved, back, c, d = _affine(x, scale, offset)
    m = jaxmm.fit(SLEEP, sleep.assign(days=moved))
    ref = jaxmm.fit(SLEEP, sleep.assign(days=back))
    assert m.optsum.converged and not m.issingular()
    assert abs(m.objective - ref.objective) <= 1e-8 * abs(ref.objective)
    assert _rel(m.beta["days"], ref.beta["days"] / c) <= 1e-8
    at = x.mean()
    var0, var1 = _cov_at(m, c * at + d)
    ref0, ref1 = _cov_at(ref, at)
    # var0 comes from theta in the data's units, whose intercept element is (offset / sd) times the
    # slope's: rounded to 1e-16 of it, it carries ~1e-16 * 1e10 relative at 1e10 SDs
    assert _rel(var1 * c * c, ref1) <= 1e-6 and _rel(var0, ref0) <= 1e-5


def test_a_singular_fit_with_an_offset_slope_stays_exactly_on_the_boundary():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(15), 6)
    x = rng.uniform(0, 10, g.size)
    y = 1 + 0.5 * x + rng.normal(size=15)[g] + rng.normal(size=g.size)
    ref = jaxmm.fit("y ~ 1 + x + (1 + x|g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    assert ref.theta[2] == 0.0  # no slope variance of its own: rank 1
    for d in (1e4, 1.7e9):
        m = jaxmm.fit("y ~ 1 + x + (1 + x|g)", pd.DataFrame({"y": y, "x": x + d, "g": g}))
        assert m.optsum.converged and m.issingular() and np.count_nonzero(m.theta[[0, 2]] == 0.0) == 1
        assert abs(m.objective - ref.objective) <= 1e-9 * abs(ref.objective)


def test_a_bootstrap_with_an_offset_random_slope_fits_every_replicate(sleep):
    """A Unix-time slope in (1 + days | subj): every replicate converged, at the optimum of its
    response (a fit of it from scratch). Replicate by replicate the draws differ from those of days
    itself (the simulation's factor of the same covariance differs by a rotation), so the two
    bootstraps agree in distribution only; a change of units alone keeps the draws."""
    unix = sleep.assign(days=sleep["days"] * 86400.0 + 1.7e9)
    m = jaxmm.fit(SLEEP, unix)
    samp = jaxmm.parametricbootstrap(7, 12, m, progress=False)
    assert samp.converged.all()
    for i, y in enumerate(simulated_responses(m, 7, 4)):
        single = jaxmm.fit(SLEEP, unix.assign(reaction=y))
        assert abs(samp.objective[i] - single.objective) <= 1e-8 * single.objective
        assert _rel(samp.replicates.beta[i], single.beta.to_numpy()) <= 1e-6


def test_a_glmm_random_slope_with_an_offset_gives_the_same_model():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(25), 8)
    x = rng.normal(size=g.size)
    eta = 0.3 + 0.5 * x + rng.normal(scale=0.6, size=25)[g] + rng.normal(scale=0.4, size=25)[g] * x
    counts = rng.poisson(np.exp(eta))
    fits = [
        jaxmm.fit("y ~ 1 + x + (1 + x|g)", pd.DataFrame({"y": counts, "x": x + d, "g": g}), family="poisson")
        for d in (0.0, 1.7e9)
    ]
    assert all(m.optsum.converged for m in fits)
    assert abs(fits[1].objective - fits[0].objective) <= 1e-8 * abs(fits[0].objective)
    assert _rel(fits[1].beta["x"], fits[0].beta["x"]) <= 1e-6
    slope_sd = [m.varcorr()["sdcor"][1] for m in fits]
    assert _rel(slope_sd[1], slope_sd[0]) <= 1e-5


def test_warnings_point_at_the_callers_line(sleep):
    """A warning raised deep inside jaxmm is attributed to the user's line, whichever jaxmm function it called."""
    with pytest.warns(UserWarning, match="rank deficient") as through_fit:
        jaxmm.fit("reaction ~ 1 + days + I(2 * days) + (1|subj)", sleep)
    with pytest.warns(UserWarning, match="rank deficient") as through_class:
        jaxmm.LinearMixedModel("reaction ~ 1 + days + I(2 * days) + (1|subj)", sleep)
    reml = [jaxmm.fit(f, sleep, REML=True) for f in ("reaction ~ 1 + days + (1|subj)", SLEEP)]
    with pytest.warns(UserWarning, match="refitting") as through_anova:
        jaxmm.anova(*reml)
    assert {w.filename for w in [*through_fit, *through_class, *through_anova]} == {__file__}
