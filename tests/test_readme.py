"""The README's examples run as written and print what the README shows; its set-up commands are
the ones CI runs."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import jaxmm
from jaxmm.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _shown_after(code: str) -> str:
    """The plain (output) block that follows the code block ending in `code`."""
    return re.search(re.escape(code) + r"\n```\n.*?\n```\n(.*?)```", README, re.S).group(1)


def test_python_examples_run_in_order_and_print_what_the_readme_shows(tmp_path, monkeypatch):
    examples = re.findall(r"```python\n(.*?)```", README, re.S)
    monkeypatch.chdir(tmp_path)  # samp.save writes into the working directory
    monkeypatch.setenv("MPLBACKEND", "Agg")
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        for example in examples:
            exec(compile(example, "README.md", "exec"), namespace)
    assert len(examples) == 9
    assert _shown_after("print(m)") in printed.getvalue()
    assert re.search(r"-92\.0263 +184\.0526 ", printed.getvalue())  # the GLMM example's comment: -2 logLik
    contrasts = 'print(e.contrast("pairwise").to_string(float_format="{:.6g}".format))  # adjust="tukey"'
    assert _shown_after(contrasts) in printed.getvalue()
    assert (tmp_path / "sleep.parquet").exists()
    assert namespace["samp"].statistic.shape == (10_000, 3)


def test_command_line_example_prints_what_the_readme_shows(capsys):
    command = re.search(r"```bash\n(jaxmm bootstrap .*?)\n```", README).group(1)
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out.endswith(_shown_after(command))


def test_command_line_commands_run(tmp_path, monkeypatch):
    block = re.search(r"The commands:\n\n```bash\n(.*?)```", README, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in block.replace("\\\n", "").splitlines()]
    assert len(commands) == 5
    monkeypatch.chdir(tmp_path)  # data.csv (columns y, x, g) and reps.parquet live here
    sleep = jaxmm.dataset("sleepstudy").rename(columns={"reaction": "y", "days": "x", "subj": "g"})
    sleep.to_csv("data.csv", index=False)
    for command in commands:
        assert command[0] == "jaxmm" and main(command[1:]) == 0, command
    assert (tmp_path / "reps.parquet").exists()


def test_set_up_commands_are_the_ones_ci_runs():
    block = re.search(r"## Install.*?```bash\n(.*?)```", README, re.S).group(1)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert block.splitlines() and all(line in ci for line in block.splitlines())
