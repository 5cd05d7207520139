"""Bootstrap throughput on whatever accelerator JAX sees (run it on a GPU machine; `--tiny` on a CPU).

    python bench/gpu_bootstrap.py [--tiny] [--out DIR] [--budget SECONDS]

Writes DIR/gpu_bootstrap.json (default bench/results) with the device's name and, per model and
replicate count and precision (float64, and float32 for sleepstudy), seconds, seconds per replicate
and the number of converged and singular replicates.
Sizes are skipped once the time budget is spent, so a run always leaves its figures behind.
Importing bench/_common switches jaxmm's compilation cache off, so the compile estimates are real compiles.
"""

import argparse
import json
import os
import resource
import time
from pathlib import Path

import jax
from _common import FORMULAS

import jaxmm


def main() -> None:
    """All local devices are used (parametricbootstrap's default); `--tiny` leaves insteval out."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="small sizes, to check the script on a CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument("--budget", type=float, default=400.0, help="seconds; later sizes are skipped after it")
    args = parser.parse_args()
    plan = (
        [("sleepstudy", [100, 1000], "float64"), ("dyestuff", [100], "float64"), ("sleepstudy", [1000], "float32")]
        if args.tiny
        else [
            ("sleepstudy", [1_000, 10_000, 100_000, 1_000_000], "float64"),
            ("dyestuff", [10_000, 100_000], "float64"),
            ("sleepstudy", [100_000, 1_000_000], "float32"),
            ("insteval", [1_000], "float64"),
        ]
    )
    dev = jax.devices()[0]
    record = {
        "device": f"{dev.platform}: {dev.device_kind}",
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "runs": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for name, sizes, precision in plan:
        t = time.time()
        m = jaxmm.fit(FORMULAS[name], jaxmm.dataset(name))
        fit_s = time.time() - t
        for n in sizes:
            if time.time() - start > args.budget:
                record["runs"].append(
                    {"model": name, "nsamp": n, "precision": precision, "skipped": "time budget spent"}
                )
                continue
            t = time.time()
            jaxmm.parametricbootstrap(1, n, m, progress=False, precision=precision)  # compiles this batch shape
            first = time.time() - t
            t = time.time()
            samp = jaxmm.parametricbootstrap(42, n, m, progress=False, precision=precision)
            steady = time.time() - t
            record["runs"].append(
                {
                    "model": name,
                    "nsamp": n,
                    "precision": precision,
                    "first_run_s": first,
                    "steady_s": steady,
                    "s_per_replicate": steady / n,
                    "compile_s_estimate": first - steady,
                    "converged": int(samp.converged.sum()),
                    "singular": int(samp.issingular().sum()),
                    "fit_first_s": fit_s,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
            print(json.dumps(record["runs"][-1]), flush=True)
            (out / "gpu_bootstrap.json").write_text(json.dumps(record, indent=1))
    (out / "gpu_bootstrap.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
