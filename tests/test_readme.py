"""The README's Python examples run as written, in order, and print what the README shows."""

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_examples_run_and_print_what_it_shows(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    examples = re.findall(r"```python\n(.*?)```", readme, re.S)
    # the quick start's print(m), shown in the plain block right after it
    shown = re.search(r"print\(m\)\n```\n\n```\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # samp.save writes into the working directory
    monkeypatch.setenv("MPLBACKEND", "Agg")
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        for example in examples:
            exec(compile(example, "README.md", "exec"), namespace)
    assert len(examples) == 6
    assert shown in printed.getvalue()
    assert re.search(r"-92\.0263 +184\.0526 ", printed.getvalue())  # the GLMM example's comment: -2 logLik
    assert (tmp_path / "sleep.parquet").exists()
    assert namespace["samp"].statistic.shape == (10_000, 3)
