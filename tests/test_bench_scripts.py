"""The GPU benchmark script runs end to end on a CPU with tiny sizes, so it is ready for a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bootstrap_script_tiny(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_bootstrap.py"), "--tiny", "--out", str(tmp_path)],
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )
    record = json.loads((tmp_path / "gpu_bootstrap.json").read_text())
    assert record["device"].startswith("cpu") and record["device_count"] == 1
    runs = {(r["model"], r["nsamp"], r["precision"]): r for r in record["runs"]}
    assert set(runs) == {
        ("sleepstudy", 100, "float64"),
        ("sleepstudy", 1000, "float64"),
        ("dyestuff", 100, "float64"),
        ("sleepstudy", 1000, "float32"),
    }
    for (_model, nsamp, _), r in runs.items():
        assert r["converged"] >= nsamp - 1 and 0 <= r["singular"] < nsamp and r["steady_s"] > 0
