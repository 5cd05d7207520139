"""The notebooks run top to bottom (with few replicates) without a cell error, and their first code
cell installs jaxmm on Colab from the one source it names, or says that the source is unset."""

import os
import sys
import types
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["bootstrap_walkthrough", "glmm_bootstrap", "model_comparison"]


def _execute(name: str, nsamp: int, tmp_path, monkeypatch) -> dict[str, list]:
    """Runs the notebook; its code cells' outputs by the cell's last line."""
    monkeypatch.setenv("JAXMM_NOTEBOOK_NSAMP", str(nsamp))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel runs in tmp_path: it imports this checkout's jaxmm whether or not it is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # execute() raises CellExecutionError, with the cell and its traceback, on the first failing cell
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return {cell.source.splitlines()[-1]: cell.outputs for cell in nb.cells if cell.cell_type == "code" and cell.source}


def _shown(outputs: list) -> str:
    return "".join(o["text"] if o["output_type"] == "stream" else o["data"]["text/plain"] for o in outputs)


def test_bootstrap_walkthrough_runs(tmp_path, monkeypatch):
    outputs = _execute("bootstrap_walkthrough", 200, tmp_path, monkeypatch)
    assert _shown(outputs["NSAMP"]) == "200"
    assert _shown(outputs["restored.tbl.equals(combined.tbl)"]) == "True"


def test_glmm_bootstrap_runs(tmp_path, monkeypatch):
    outputs = _execute("glmm_bootstrap", 100, tmp_path, monkeypatch)
    assert "184.0526" in _shown(outputs["gm"])  # lme4's -2 logLik
    assert "MixedModelBootstrap with 100 samples" in _shown(outputs["samp"])
    assert "bootstrap (shortest)" in _shown(outputs['pd.concat({"Wald": wald, "bootstrap (shortest)": boot}, axis=1)'])


def test_model_comparison_runs(tmp_path, monkeypatch):
    outputs = _execute("model_comparison", 100, tmp_path, monkeypatch)
    assert "Parametric bootstrap likelihood-ratio test: 100 replicates" in _shown(outputs["slope"])
    assert "42.0754" in _shown(outputs["jaxmm.likelihoodratiotest(m0, m1)"])  # lme4's Chisq
    assert "days" in _shown(outputs['reml.anova(ddf="kenward-roger")'])


def _install_cell(name: str) -> str:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return next(cell.source for cell in nb.cells if cell.cell_type == "code")


class _Shell:
    """get_ipython() as Colab's: records the %pip line with its {variables} expanded."""

    def __init__(self, namespace):
        self.namespace, self.lines = namespace, []

    def run_line_magic(self, magic, line, _stack_depth=1):
        self.lines.append(f"%{magic} {line.format(**self.namespace)}")


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_installs_from_the_source_set_at_its_top_on_colab(name, monkeypatch):
    source = _install_cell(name)
    assert source == _install_cell(NAMES[0])  # the same cell in every notebook
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    code = TransformerManager().transform_cell(source)
    namespace: dict = {}
    shell = _Shell(namespace)
    namespace["get_ipython"] = lambda: shell
    with pytest.raises(RuntimeError, match="set JAXMM_SOURCE in the first code cell"):
        exec(code, namespace)  # unset: says so, installs nothing
    assert shell.lines == []
    url = "git+https://github.com/example/jaxmm"
    exec(code.replace('JAXMM_SOURCE = ""', f'JAXMM_SOURCE = "{url}"', 1), namespace)
    assert shell.lines == [f"%pip install -q {url}"]
