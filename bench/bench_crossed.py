"""The bootstrap of crossed and nested LMMs and of a small GLMM against lme4's bootMer, with the
lanes side by side (vmap; jaxmm.linalg's looped factors keep LAPACK out of these kernels) and one
at a time (lax.map), both forced in the same run; jaxmm's default is the first for the LMMs whose dense
part has at most 48 rows (all but the kb07-size models), the second for GLMMs (lanes.vectorisable).

    PYTHONPATH=. python bench/bench_crossed.py [--nsamp 4000] [--lme4-nsim 200] [--kb07-lme4-nsim 20]

Models: penicillin `diameter ~ 1 + (1|plate) + (1|sample)` and pastes `strength ~ 1 + (1|batch/cask)`
(ML), cbpp `incidence/size ~ 1 + period + (1|herd)` (binomial, Laplace; nsamp / 10 replicates), and
the kb07-size LMMs of bench/bench_ddf.py (56 subjects x 32 items, simulated), maximal and with the
same terms uncorrelated (`||`), ML, nsamp / 20 replicates.
jaxmm: the best of 3 warm runs (compiled code reused), seeds 2, 3, 4. lme4:
`Rscript bench/lme4_bootmer_crossed.R <nsim>`, run from this script in the same stretch of load.
Writes bench/results/crossed.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import jax
from _common import RESULTS, ROOT, code_version, load, run_meta
from bench_ddf import KB07, kb07_like

import jaxmm
import jaxmm.glmm.model
import jaxmm.lanes
import jaxmm.lmm

KB07_ZEROCORR = KB07.replace("|", "||")
SHARE = {"cbpp": 10, "kb07_maximal": 20, "kb07_zerocorr": 20}  # nsamp / SHARE replicates


def models() -> dict:
    cbpp = jaxmm.dataset("cbpp")
    cbpp = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    kb07 = kb07_like()
    return {
        "kb07_maximal": jaxmm.fit(KB07, kb07, REML=False),
        "kb07_zerocorr": jaxmm.fit(KB07_ZEROCORR, kb07, REML=False),
        "penicillin": jaxmm.fit("diameter ~ 1 + (1|plate) + (1|sample)", jaxmm.dataset("penicillin")),
        "pastes": jaxmm.fit("strength ~ 1 + (1|batch/cask)", jaxmm.dataset("pastes")),
        "cbpp": jaxmm.fit("prop ~ 1 + period + (1|herd)", cbpp, family="binomial", weights="size"),
    }


def per_replicate(m, nsamp: int, devices: int | None = None) -> float:
    """Best of 3 warm runs, seconds per replicate (the first call compiles). `devices`: parametricbootstrap's
    (None: jaxmm's choice, which starts a second CPU device only for a run long enough to repay it)."""
    jaxmm.parametricbootstrap(1, nsamp, m, progress=False, devices=devices)
    times = []
    for seed in (2, 3, 4):
        start = time.perf_counter()
        samp = jaxmm.parametricbootstrap(seed, nsamp, m, progress=False, devices=devices)
        times.append(time.perf_counter() - start)
        assert samp.converged.all()
    return min(times) / nsamp


def lanes_side_by_side(flag: bool | None) -> None:
    """Force every kernel to run its lanes side by side (True; where its program calls no LAPACK, whose
    batched calls can deadlock: lanes.vectorisable) or one at a time (False); None: jaxmm's choice."""
    for module in (jaxmm.lmm, jaxmm.glmm.model):
        forced = lambda calls_lapack, inner_loops=False: flag and not calls_lapack
        module.vectorisable = jaxmm.lanes.vectorisable if flag is None else forced
    jax.clear_caches()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nsamp", type=int, default=4000)
    parser.add_argument("--lme4-nsim", type=int, default=200)
    parser.add_argument("--kb07-lme4-nsim", type=int, default=20)
    parser.add_argument("--devices", type=int, help="jaxmm's CPU devices (default: jaxmm's choice; 2: both cores)")
    args = parser.parse_args()
    if args.devices:
        jax.config.update("jax_num_cpu_devices", args.devices)  # before JAX starts
    version, start_load = code_version(), load()
    fits = models()
    rows = {}
    for name, m in fits.items():
        n = args.nsamp // SHARE.get(name, 1)
        rows[name] = {"nsamp": n, "load_before": load()}
        lanes_side_by_side(True)
        modes = ((True, "vectorised_ms"), (False, "serial_ms")) if m.lanes().vectorised else ((False, "serial_ms"),)
        rows[name]["vectorised_ms"] = float("nan")
        for flag, key in modes:
            lanes_side_by_side(flag)
            rows[name][key] = 1e3 * per_replicate(m, n, args.devices)
        lanes_side_by_side(None)
    with tempfile.TemporaryDirectory() as tmp:
        out, data = Path(tmp) / "lme4.json", Path(tmp) / "kb07.csv"
        kb07_like().to_csv(data, index=False)
        nsims = [str(args.lme4_nsim), str(out), str(data), str(args.kb07_lme4_nsim)]
        subprocess.run(["Rscript", "bench/lme4_bootmer_crossed.R", *nsims], cwd=ROOT, check=True)
        lme4 = json.loads(out.read_text())
    print("| model | lme4 bootMer ms/rep | jaxmm lanes one at a time | jaxmm lanes side by side | lme4/jaxmm (best) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        row["lme4_ms"] = lme4[name]["ms_per_replicate"]
        row["ratio"] = row["lme4_ms"] / min(t for t in (row["vectorised_ms"], row["serial_ms"]) if t == t)  # not NaN
        print(
            f"| {name} | {row['lme4_ms']:.2f} | {row['serial_ms']:.4f} | {row['vectorised_ms']:.4f} | "
            f"{row['ratio']:.0f}x |"
        )
    meta = run_meta({"start": start_load, "end": load()}, version)
    result = {"run": meta, "jaxmm_devices": args.devices or "jaxmm's choice", "lme4": lme4["_meta"], "models": rows}
    out = RESULTS / ("crossed.json" if not args.devices else f"crossed_{args.devices}_devices.json")
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
