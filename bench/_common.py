"""What the benchmark scripts share: paths, and what to record about the code and the machine.

Importing it (before jaxmm) switches jaxmm's persistent compilation cache off for this process and
the processes it starts, so every compile time a benchmark reports is a real compile."""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ["JAXMM_CACHE_DIR"] = ""

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The shipped LMM examples the benchmarks fit, each on the data set of its name.
FORMULAS = {
    "dyestuff": "yield ~ 1 + (1|batch)",
    "dyestuff2": "yield ~ 1 + (1|batch)",
    "sleepstudy": "reaction ~ 1 + days + (1 + days|subj)",
    "penicillin": "diameter ~ 1 + (1|plate) + (1|sample)",
    "pastes": "strength ~ 1 + (1|batch/cask)",
    "insteval": "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
}


def code_version() -> dict:
    """Which jaxmm code ran: git HEAD, uncommitted changes under jaxmm/, and a hash of the sources.

    Taken right after `import jaxmm` (which imports every module), so it describes the code this
    process is running even if the files are edited while the benchmark runs.
    """
    import hashlib

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()
        except (OSError, subprocess.CalledProcessError):
            return None

    h = hashlib.sha256()
    for p in sorted((ROOT / "jaxmm").glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    dirty = git("status", "--porcelain", "--", "jaxmm")
    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "jaxmm_uncommitted_changes": dirty.splitlines() if dirty else [],
        "jaxmm_sources_sha256": h.hexdigest()[:16],
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_meta(loads: dict, code: dict) -> dict:
    """Machine, software and code of a benchmark run, for its JSON."""
    import jax

    import jaxmm

    return {
        "loadavg_before_each_phase": loads,
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "shared_machine": True,
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "jaxmm": jaxmm.__version__,
        "jaxmm_code": code,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def audit_counts(rel, unconverged, tolerance: float) -> dict:
    """A convergence audit's counts from rel = (jaxmm objective - refit objective) / refit
    objective per replicate and jaxmm's unconverged flags (bench_convergence_audit.py, audit_insteval.py)."""
    import numpy as np

    worse = rel > tolerance
    return {
        "worse_than_refit_by_more_than_1e-6": int(worse.sum()),
        "worse_than_refit_by_more_than_1e-9": int((rel > 1e-9).sum()),
        "unconverged": int(unconverged.sum()),
        "unconverged_and_within_1e-6": int((unconverged & ~worse).sum()),
        "lower_than_refit": int((rel < 0).sum()),
        "lower_than_refit_by_more_than_1e-9": int((rel < -1e-9).sum()),
        "lower_than_refit_by_more_than_1e-6": int((rel < -tolerance).sum()),
        "rel_quantiles": dict(
            zip(("min", "1%", "50%", "99%", "max"), np.quantile(rel, [0, 0.01, 0.5, 0.99, 1]).tolist())
        ),
    }


def run_rscript(script: str, *args: str) -> dict:
    """Run `Rscript bench/<script>.R args...` and read the JSON it writes to bench/results/<script>.json."""
    cmd = ["Rscript", f"bench/{script}.R", *args]
    print("running", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    out = json.loads((RESULTS / f"{script}.json").read_text())
    out["_wall_s"] = wall
    return out
