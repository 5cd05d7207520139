"""insteval's parametric bootstrap against lme4's bootMer, per replicate (issue 24's insteval target).

    PYTHONPATH=. python bench/bench_insteval_bootstrap.py [--nsamp 32] [--repeats 2] [--lme4-nsim 8]

Model: `y ~ 1 + service + (1|s) + (1|d) + (1|dept)` (ML) on jaxmm's insteval (73,421 rows; s, 2,972 levels,
eliminated level by level; the dense Schur complement over [d, dept, X, y] has 1,145 rows, factored by LAPACK,
so the lanes run one at a time). jaxmm: a warm-up bootstrap of --warmup replicates (it compiles), then
--repeats timed `parametricbootstrap(seed, nsamp, m)` runs, seeds 2, 3, ...; ms per replicate of each, the
best counts (wall time; beside it the process's CPU time, all threads, which other jobs move less).
lme4: `Rscript bench/lme4_bootmer_insteval.R <nsim>` (bootMer, use.u = FALSE, after an untimed lmer fit),
run from this script after jaxmm's runs, in the same stretch of load. The load average (os.getloadavg) is
recorded before and after each part: on a shared machine it decides the figures. --lme4-nsim 0 skips lme4.
Writes bench/results/insteval_bootstrap.json (--out), with each timed run's replicate objectives and theta
(to compare two versions of the code replicate by replicate).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import FORMULAS, RESULTS, ROOT, code_version, load, run_meta

import jaxmm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nsamp", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--lme4-nsim", type=int, default=8)
    parser.add_argument("--out", default=str(RESULTS / "insteval_bootstrap.json"))
    args = parser.parse_args()
    version, loads = code_version(), {"start": load()}
    start = time.perf_counter()
    m = jaxmm.fit(FORMULAS["insteval"], jaxmm.dataset("insteval"), REML=False)
    fit_s = time.perf_counter() - start
    runs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        jaxmm.parametricbootstrap(1, args.warmup, m, progress=False)
        warmup_s = time.perf_counter() - start
        for seed in range(2, 2 + args.repeats):
            load_before = load()
            start, cpu_start = time.perf_counter(), time.process_time()
            samp = jaxmm.parametricbootstrap(seed, args.nsamp, m, progress=False)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            reps = samp.replicates
            runs.append(
                {
                    "seed": seed,
                    "seconds": seconds,
                    "ms_per_replicate": 1e3 * seconds / args.nsamp,
                    "cpu_ms_per_replicate": 1e3 * cpu_seconds / args.nsamp,
                    "load_before": load_before,
                    "load_after": load(),
                    "converged": int(np.sum(reps.converged)),
                    "mean_niter": float(np.mean(reps.niter)),
                    "objective": reps.objective.tolist(),
                    "theta": reps.theta.tolist(),
                }
            )
            ms, cpu_ms = runs[-1]["ms_per_replicate"], runs[-1]["cpu_ms_per_replicate"]
            print(f"jaxmm seed {seed}: {ms:.0f} ms/replicate ({cpu_ms:.0f} CPU ms), load {load_before} -> {load()}")
    best = min(run["ms_per_replicate"] for run in runs)
    result = {"fit_s": fit_s, "warmup_s": warmup_s, "nsamp": args.nsamp, "runs": runs, "best_ms_per_replicate": best}
    loads["jaxmm_end"] = load()
    if args.lme4_nsim > 0:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "lme4.json"
            cmd = ["Rscript", "bench/lme4_bootmer_insteval.R", str(args.lme4_nsim), str(out)]
            subprocess.run(cmd, cwd=ROOT, check=True)
            lme4 = json.loads(out.read_text())
        loads["lme4_end"] = load()
        result["lme4"] = lme4
        result["ratio"] = lme4["insteval"]["ms_per_replicate"] / best
        lme4_ms = lme4["insteval"]["ms_per_replicate"]
        print(f"bootMer {lme4_ms:.0f} ms/replicate; jaxmm {best:.0f}: {result['ratio']:.1f}x")
    result["run"] = run_meta(loads, version)
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
