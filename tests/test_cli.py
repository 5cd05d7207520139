"""The `jaxmm` command line: the same numbers as the Python API, replicate tables on disk, one-line errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.cli import main

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
        (["refit"], "jaxmm: error: argument {fit,bootstrap}: invalid choice: 'refit'"),
        (
            ["bootstrap", "--dataset", "dyestuff", "-f", FORMULA, "--precision", "half"],
            "jaxmm bootstrap: error: argument --precision: invalid choice: 'half'",
        ),
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
    """The `jaxmm` script from [project.scripts], in a process of its own, gives the same intervals."""
    script = Path(sys.executable).with_name("jaxmm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "jaxmm"]
    done = subprocess.run(command + _bootstrap(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = samp.shortestcovint(0.95)[["lower", "upper"]].to_numpy()
    np.testing.assert_allclose(_printed_intervals(done.stdout), expected, rtol=1e-6)
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
