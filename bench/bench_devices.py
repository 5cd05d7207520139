"""Bootstrap throughput per number of CPU devices (sleepstudy, 10,000 replicates).

    PYTHONPATH=. python bench/bench_devices.py [--counts 1 2 4] [--nsamp 10000]

JAX shows one CPU as several devices with XLA_FLAGS=--xla_force_host_platform_device_count=N;
each count runs in its own process (the flag must be set before JAX starts), which fits the model
and times parametricbootstrap(42, nsamp) twice (cold: compile included; warm: steady state).
The lanes per device are the default (jaxmm.bootstrap.lane_width), so N devices fit N times as
many lanes per call. Writes bench/results/devices_cpu.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, ROOT, code_version, load, run_meta

CODE_VERSION = code_version()

CHILD = """
import json, sys, time, warnings
import jax, jaxmm
from jaxmm.bootstrap import lane_width
warnings.simplefilter("ignore")
m = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy"))
nsamp = int(sys.argv[1])
times = []
for _ in range(2):
    t = time.perf_counter()
    samp = jaxmm.parametricbootstrap(42, nsamp, m, progress=False)
    times.append(time.perf_counter() - t)
record = {"devices": jax.device_count(), "lanes_per_device": lane_width(m, "cpu"), "cold_s": times[0],
          "warm_s": times[1], "singular": int(samp.issingular().sum()), "converged": int(samp.converged.sum())}
print("RESULT" + json.dumps(record))
"""


def run(count: int, nsamp: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(nsamp)], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT"))[len("RESULT") :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--nsamp", type=int, default=10_000)
    args = ap.parse_args()
    runs, loads = [], {}
    for count in args.counts:
        print(f"{count} CPU device(s) ...", flush=True)
        loads[f"{count} devices"] = load()
        runs.append(run(count, args.nsamp))
    base = runs[0]["warm_s"]
    print(
        "\n| CPU devices | lanes per device | cold (s) | warm (s) | warm replicates / s "
        f"| speed-up vs {args.counts[0]} |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['devices']} | {r['lanes_per_device']} | {r['cold_s']:.2f} | {r['warm_s']:.3f} "
            f"| {args.nsamp / r['warm_s']:,.0f} | {base / r['warm_s']:.2f}× |"
        )
    (RESULTS / "devices_cpu.json").write_text(
        json.dumps({"nsamp": args.nsamp, "runs": runs, **run_meta(loads, CODE_VERSION)}, indent=1)
    )


if __name__ == "__main__":
    main()
