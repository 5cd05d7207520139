"""The README's examples run as written and print what the README shows."""

import contextlib
import io
import re
import shlex
from pathlib import Path

from jaxmm.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


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
    assert len(examples) == 7
    assert _shown_after("print(m)") in printed.getvalue()
    assert re.search(r"-92\.0263 +184\.0526 ", printed.getvalue())  # the GLMM example's comment: -2 logLik
    assert (tmp_path / "sleep.parquet").exists()
    assert namespace["samp"].statistic.shape == (10_000, 3)


def test_command_line_example_prints_what_the_readme_shows(capsys):
    command = re.search(r"```bash\n(jaxmm bootstrap .*?)\n```", README).group(1)
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out.endswith(_shown_after(command))
