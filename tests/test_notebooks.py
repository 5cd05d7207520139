"""The walkthrough notebook runs top to bottom (with few replicates) without a cell error."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def test_bootstrap_walkthrough_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMM_NOTEBOOK_NSAMP", "200")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # the kernel runs in tmp_path: it imports this checkout's jaxmm whether or not it is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOKS / "bootstrap_walkthrough.ipynb", as_version=4)
    # execute() raises CellExecutionError, with the cell and its traceback, on the first failing cell
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {
        cell.source.splitlines()[-1]: cell.outputs for cell in nb.cells if cell.cell_type == "code" and cell.source
    }
    assert outputs["NSAMP"][0]["data"]["text/plain"] == "200"
    assert outputs["restored.tbl.equals(combined.tbl)"][0]["data"]["text/plain"] == "True"
