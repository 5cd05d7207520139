"""The `jaxmm` command line: the same numbers as the Python API, replicate tables on disk, one-line errors."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.cli import main
from jaxmm.display import anova_table

FORMULA = "yield ~ 1 + (1 | batch)"
NSAMP, SEED = 200, 7


@pytest.fixture(scope="module")
def model():
    return jaxmm.fit(FORMULA, jaxmm.dataset("dyestuff"))


@pytest.fixture(scope="module")
def samp(model):
    return jaxmm.parametricbootstrap(SEED, NSAMP, model, progress=False)


def _bootstrap(*extra) -> list[str]:
    return ["bootstrap", "--dataset", "dyestuff", "--formula", FORMULA, "-n", str(NSAMP), "--seed", str(SEED), *extra]


def _printed_intervals(out: str) -> np.ndarray:
    """(lower, upper) per row of the printed table: the last two fields (names may hold spaces)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Shortest 95% coverage intervals")) + 2
    stop = next(i for i, line in enumerate(lines) if line.startswith("Singular replicates"))
    return np.array([[float(v) for v in line.split()[-2:]] for line in lines[start:stop]])


def test_bootstrap_prints_the_apis_summary_intervals_and_singular_count(model, samp, capsys, tmp_path):
    out_file = tmp_path / "reps.parquet"
    assert main(_bootstrap("--out", str(out_file))) == 0
    out = capsys.readouterr().out
    assert out.startswith(str(model))
    expected = samp.shortestcovint(0.95)[["lower", "upper"]].to_numpy()
    np.testing.assert_allclose(_printed_intervals(out), expected, rtol=1e-6)
    singular = int(samp.issingular().sum())
    assert singular > 0  # dyestuff's bootstrap has singular fits: the count is not trivially 0
    assert f"Singular replicates: {singular} of {NSAMP}" in out
    restored = jaxmm.restorereplicates(out_file, model)
    pd.testing.assert_frame_equal(restored.tbl, samp.tbl, check_exact=True)
    assert restored.provenance == samp.provenance


def test_bootstrap_writes_csv_and_takes_the_level(samp, capsys, tmp_path):
    out_file = tmp_path / "reps.csv"
    assert main(_bootstrap("--out", str(out_file), "--level", "0.8")) == 0
    out = capsys.readouterr().out
    assert "Shortest 80% coverage intervals:" in out
    assert f"{samp.shortestcovint(0.8)['upper'].iloc[0]:.6f}" in out
    pd.testing.assert_frame_equal(pd.read_csv(out_file), samp.tbl, check_exact=False, rtol=1e-12)


def test_bootstrap_precision_float32(model, capsys, tmp_path):
    out_file = tmp_path / "reps.parquet"
    assert main(_bootstrap("--out", str(out_file), "--precision", "float32")) == 0
    expected = jaxmm.parametricbootstrap(SEED, NSAMP, model, progress=False, precision="float32").tbl
    pd.testing.assert_frame_equal(jaxmm.restorereplicates(out_file, model).tbl, expected)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_fit_reads_a_data_file(suffix, capsys, tmp_path):
    data = jaxmm.dataset("dyestuff")
    path = tmp_path / f"dyestuff{suffix}"
    data.to_csv(path, index=False) if suffix == ".csv" else data.to_parquet(path)
    assert main(["fit", str(path), "--formula", FORMULA, "--reml"]) == 0
    assert capsys.readouterr().out.strip() == str(jaxmm.fit(FORMULA, data, REML=True))


def test_warnings_are_one_line(capsys, tmp_path):
    data = jaxmm.dataset("dyestuff")
    data.loc[0, "yield"] = np.nan
    path = tmp_path / "gap.csv"
    data.to_csv(path, index=False)
    assert main(["fit", str(path), "--formula", FORMULA]) == 0
    err = capsys.readouterr().err
    assert err.startswith("jaxmm: warning: dropped 1 of 30 rows") and err.count("\n") == 1


def _json(out: str) -> dict:
    """stdout of --json: exactly one JSON object (strict: no NaN or Infinity), nothing else."""
    assert out.endswith("\n") and out.count("\n") == 1

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(out, parse_constant=refuse)


def _check_model_json(got: dict, m) -> None:
    assert (got["formula"], got["REML"], got["nobs"], got["dof"]) == (m.formula, m.REML, m.nobs, m.dof)
    assert got["objective"] == m.objective and got["theta"] == m.theta.tolist()
    ct = m.coeftable()
    assert [c["name"] for c in got["coefficients"]] == list(ct.index)
    np.testing.assert_array_equal([[c[k] for k in ("estimate", "se", "z", "p")] for c in got["coefficients"]], ct)
    np.testing.assert_array_equal([v["sdcor"] for v in got["varcorr"]], m.varcorr()["sdcor"])


def test_fit_json_holds_the_models_estimates(model, capsys):
    assert main(["fit", "--dataset", "dyestuff", "-f", FORMULA, "--json"]) == 0
    got = _json(capsys.readouterr().out)
    assert got["command"] == "fit"
    _check_model_json(got["model"], model)
    assert (got["model"]["family"], got["model"]["link"], got["model"]["sigma"]) == (
        "gaussian",
        "identity",
        model.sigma,
    )
    assert got["model"]["varcorr"][-1] == {
        "grp": "Residual",
        "var1": None,
        "var2": None,
        "vcov": model.sigma**2,
        "sdcor": model.sigma,
    }


def test_bootstrap_json_holds_the_intervals_and_writes_a_restorable_file(model, samp, capsys, tmp_path):
    out_file = tmp_path / "reps.parquet"
    assert main(_bootstrap("--json", "--level", "0.9", "--out", str(out_file))) == 0
    got = _json(capsys.readouterr().out)
    _check_model_json(got["model"], model)
    boot = got["bootstrap"]
    assert (boot["nsamp"], boot["seed"], boot["level"], boot["out"]) == (NSAMP, SEED, 0.9, str(out_file))
    assert (boot["singular"], boot["converged"]) == (int(samp.issingular().sum()), NSAMP)
    expected = samp.shortestcovint(0.9)
    assert [[r["type"], r["group"], r["names"]] for r in boot["intervals"]] == [
        [None if pd.isna(v) else v for v in row] for row in expected[["type", "group", "names"]].to_numpy()
    ]
    np.testing.assert_array_equal([[r["lower"], r["upper"]] for r in boot["intervals"]], expected[["lower", "upper"]])
    pd.testing.assert_frame_equal(jaxmm.restorereplicates(out_file, model).tbl, samp.tbl, check_exact=True)


def test_lmm_weights_offset_and_reml(capsys, tmp_path):
    data = jaxmm.dataset("sleepstudy")
    data["w"] = 1.0 + (data["days"] % 3)
    data["o"] = 0.5 * data["days"]
    path = tmp_path / "sleep.csv"
    data.to_csv(path, index=False)
    formula = "reaction ~ 1 + days + (1 | subj)"
    assert main(["fit", str(path), "-f", formula, "--weights", "w", "--offset", "o", "--reml"]) == 0
    expected = jaxmm.fit(formula, pd.read_csv(path), REML=True, weights="w", offset="o")
    assert capsys.readouterr().out.strip() == str(expected)


def test_glmm_family_link_and_weights(capsys, tmp_path):
    data = jaxmm.dataset("cbpp")
    data["prop"] = data["incidence"] / data["size"]
    formula = "prop ~ 1 + period + (1 | herd)"
    path = tmp_path / "cbpp.parquet"
    data.to_parquet(path)
    argv = ["fit", str(path), "-f", formula, "--family", "binomial", "--link", "probit", "--weights", "size"]
    assert main(argv) == 0
    expected = jaxmm.fit(formula, data, family="binomial", link="probit", weights="size")
    assert capsys.readouterr().out.strip() == str(expected)
    assert main([*argv, "--json"]) == 0
    got = _json(capsys.readouterr().out)["model"]
    _check_model_json(got, expected)
    assert (got["family"], got["link"], got["sigma"], got["loglikelihood"]) == (
        "binomial",
        "probit",
        None,
        expected.loglikelihood,
    )


SMALL, LARGE = "reaction ~ 1 + days + (1 | subj)", "reaction ~ 1 + days + (1 + days | subj)"


def test_pblrt_prints_and_returns_the_apis_test(capsys):
    sleep = jaxmm.dataset("sleepstudy")
    small, large = jaxmm.fit(SMALL, sleep), jaxmm.fit(LARGE, sleep)
    expected = jaxmm.pblrt(3, 100, small, large, progress=False)
    argv = ["pblrt", "--dataset", "sleepstudy", "-f", SMALL, LARGE, "-n", "100", "--seed", "3"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == repr(expected)
    assert main([*argv, "--json"]) == 0
    got = _json(capsys.readouterr().out)
    _check_model_json(got["models"][0], small)
    _check_model_json(got["models"][1], large)
    test = got["test"]
    assert (test["nsamp"], test["seed"], test["nused"], test["nfailed"], test["df"]) == (100, 3, 100, 0, 2)
    for name in ("lrt", "bartlett", "pvalue_chisq", "pvalue_bootstrap", "pvalue_gamma", "pvalue_bartlett"):
        assert test[name] == getattr(expected, name), name


def test_anova_prints_and_returns_the_apis_table(capsys):
    sleep = jaxmm.dataset("sleepstudy")
    formulas = [LARGE, "reaction ~ 1 + (1 | subj)", SMALL]  # anova orders them by number of parameters
    expected = jaxmm.anova(*(jaxmm.fit(f, sleep) for f in formulas))
    assert main(["anova", "--dataset", "sleepstudy", "-f", *formulas]) == 0
    assert capsys.readouterr().out.strip() == anova_table(expected).strip()
    assert main(["anova", "--dataset", "sleepstudy", "-f", *formulas, "--json"]) == 0
    got = _json(capsys.readouterr().out)
    assert [m["formula"] for m in got["models"]] == formulas
    assert [row["model"] for row in got["anova"]] == list(expected.index)
    assert got["anova"][0]["Chisq"] is None and got["anova"][0]["Pr(>Chisq)"] is None  # NaN in the table
    np.testing.assert_array_equal([[row[c] for c in expected.columns] for row in got["anova"][1:]], expected.iloc[1:])


def test_anova_refits_reml_fits_with_a_one_line_warning(capsys):
    assert main(["anova", "--dataset", "sleepstudy", "-f", SMALL, LARGE, "--reml"]) == 0
    assert capsys.readouterr().err == "jaxmm: warning: refitting model(s) with ML (instead of REML)\n"


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("terminal", "ci", "extra", "shown"),
    [
        (False, None, [], False),  # not a terminal (a log, a pipe)
        (True, None, [], True),
        (True, None, ["--quiet"], False),
        (True, "true", [], False),  # a terminal in CI: logs hold no bar
    ],
)
def test_progress_bar_only_in_a_terminal_outside_ci(terminal, ci, extra, shown, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    if ci:
        monkeypatch.setenv("CI", ci)
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(_bootstrap(*extra)) == 0
    assert ("bootstrap: 100%" in err.getvalue()) == shown
    assert shown or err.getvalue() == ""


def test_progress_bar_in_a_jupyter_kernel(monkeypatch):
    """A kernel's stderr is no terminal, but someone watches: tqdm.auto draws its widget there."""
    from jaxmm.bootstrap.engine import shows_progress

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not shows_progress(True)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", sys)  # what tqdm.auto looks for, too
    assert shows_progress(True) and not shows_progress(False)
    monkeypatch.setenv("CI", "true")
    assert not shows_progress(True)


def test_progress_false_prints_nothing_in_a_terminal(model, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    jaxmm.parametricbootstrap(SEED, 50, model, progress=False)
    assert sys.stderr.getvalue() == ""


def test_an_internal_error_is_one_line_too(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr("jaxmm.cli._data", broken)
    assert main(["fit", "--dataset", "dyestuff", "-f", FORMULA]) == 2
    err = capsys.readouterr().err
    assert err == "jaxmm: error: internal error, KeyError: 'boom' (--traceback shows where; please report it)\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "--dataset", "nosuch", "-f", FORMULA], "jaxmm: error: unknown dataset 'nosuch'; available: cake,"),
        (["fit", "missing.csv", "-f", FORMULA], "jaxmm: error: no such data file: missing.csv"),
        (
            ["fit", "data.xlsx", "-f", FORMULA],
            "jaxmm: error: cannot read data.xlsx: the data file must end in .csv or .parquet",
        ),
        (["fit", "ragged.csv", "-f", FORMULA], "jaxmm: error: cannot read ragged.csv: Error tokenizing data."),
        (["fit", "--dataset", "dyestuff", "-f", "yield ~ 1 + (1 | plate)"], "jaxmm: error: 'plate' in formula"),
        (
            ["fit", "data.xlsx", "--dataset", "dyestuff", "-f", FORMULA],
            "jaxmm: error: give either a data file or --dataset NAME",
        ),
        (
            ["bootstrap", "--dataset", "dyestuff", "-f", FORMULA, "--out", "reps.xlsx"],
            "jaxmm: error: --out reps.xlsx: the file must end in .parquet, .arrow, .feather or .csv",
        ),
        (
            ["bootstrap", "--dataset", "dyestuff", "-f", FORMULA, "--out", "no/such/dir/reps.parquet"],
            "jaxmm: error: --out no/such/dir/reps.parquet: no such directory no/such/dir",
        ),
        (
            ["bootstrap", "--dataset", "dyestuff", "-f", FORMULA, "--level", "95"],
            "jaxmm bootstrap: error: argument --level: must be a number strictly between 0 and 1, got '95'",
        ),
        (
            ["bootstrap", "--dataset", "dyestuff", "-f", FORMULA, "-n", "-3"],
            "jaxmm bootstrap: error: argument -n/--nsamp: must be a positive integer",
        ),
        (["fit", "--dataset", "dyestuff"], "jaxmm fit: error: the following arguments are required: --formula"),
        (["refit"], "jaxmm: error: argument {fit,bootstrap,pblrt,anova}: invalid choice: 'refit'"),
        (
            ["bootstrap", "--dataset", "dyestuff", "-f", FORMULA, "--precision", "half"],
            "jaxmm bootstrap: error: argument --precision: invalid choice: 'half'",
        ),
        (["fit", "--dataset", "dyestuff", "-f", FORMULA, "--family", "nosuch"], "jaxmm: error: family must be one of"),
        (["fit", "--dataset", "dyestuff", "-f", FORMULA, "--link", "log"], "jaxmm: error: link, fast and nAGQ apply"),
        (
            ["fit", "--dataset", "dyestuff", "-f", FORMULA, "--weights", "w"],
            "jaxmm: error: weights 'w' is not a column of the data",
        ),
        (["pblrt", "--dataset", "dyestuff", "-f", FORMULA], "jaxmm pblrt: error: argument --formula/-f: expected 2"),
        (
            ["pblrt", "--dataset", "dyestuff", "-f", FORMULA, FORMULA, "--family", "poisson"],
            "jaxmm: error: unrecognized",
        ),
        (
            ["pblrt", "--dataset", "dyestuff", "-f", FORMULA, FORMULA],
            "jaxmm: error: m_small is not nested in m_large: it has 3 parameters, m_large 3",
        ),
        (["anova", "--dataset", "dyestuff", "-f", FORMULA], "jaxmm: error: anova compares two or more fitted models"),
    ],
)
def test_errors_are_one_line_with_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data.xlsx").write_text("not a table")
    Path("ragged.csv").write_text("yield,batch\n1,A\n2,B,3\n")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message)
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_traceback_flag_shows_the_exception(capsys):
    with pytest.raises(ValueError, match="unknown dataset 'nosuch'"):
        main(["fit", "--dataset", "nosuch", "-f", FORMULA, "--traceback"])


def test_installed_command_matches_the_api(samp):
    """The `jaxmm` script from [project.scripts], in a process of its own, gives the same intervals;
    with --json its stdout is the one JSON object (JAX's own messages, if any, go elsewhere)."""
    script = Path(sys.executable).with_name("jaxmm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "jaxmm"]
    done = subprocess.run(command + _bootstrap("--json"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    intervals = _json(done.stdout)["bootstrap"]["intervals"]
    expected = samp.shortestcovint(0.95)[["lower", "upper"]].to_numpy()
    np.testing.assert_array_equal([[r["lower"], r["upper"]] for r in intervals], expected)
    failed = subprocess.run(
        [sys.executable, "-m", "jaxmm", "fit", "nothere.parquet", "-f", FORMULA],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (failed.returncode, failed.stdout, failed.stderr) == (
        2,
        "",
        "jaxmm: error: no such data file: nothere.parquet\n",
    )
