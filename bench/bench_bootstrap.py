"""Parametric bootstrap timing: jaxmm.parametricbootstrap vs lme4::bootMer (and MixedModels.jl's published figures).

Run from the repository root (about 5 minutes on a 2-core CPU; `--full` adds 100,000 and 1,000,000):

    PYTHONPATH=. python bench/bench_bootstrap.py [--full] [--lme4-nsim 300]

Models (ML): dyestuff `yield ~ 1 + (1|batch)`, sleepstudy `reaction ~ 1 + days + (1 + days|subj)`.
Both programs run from this one script, one after the other, so their timings come from the same
stretch of machine load (os.getloadavg() is recorded before each phase). lme4 runs as
`Rscript bench/lme4_bootmer.R <nsim>` (bench/results/lme4_bootmer.json).

jaxmm: every nsamp in (100, 1000, 10000) is run twice with the default batch size and seed 42:
  cold  the first call at that nsamp; it includes JIT compilation of whatever batch shape(s) that
        nsamp uses and the process has not compiled yet (depends on jaxmm's batch-size rule)
  warm  the same call again, compiled code reused (steady state)
  compile = cold - warm. The very first call (nsamp=100) gives the compile of a first small run.
"Including compile" is computed two ways for 10,000 replicates: as asked, (lme4 s/rep * 10000) /
(compile of the first small run + warm 10,000 time); and from a fresh Python process (run by this
script) that fits the model and times one parametricbootstrap(42, 10000) call, compile included,
which is what a user pays for a single 10,000-replicate bootstrap. `--full` adds nsamp=100,000 and 1,000,000 once
each, after the
10,000 runs (so it reuses whatever shapes they compiled).
Peak memory is resource.getrusage(RUSAGE_SELF).ru_maxrss (the process's high-water mark so far)
after each run. Writes bench/results/bootstrap.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import FORMULAS, RESULTS, ROOT, code_version, load, run_meta, run_rscript

import jaxmm

CODE_VERSION = code_version()
SEED = 42

MODELS = ("dyestuff", "sleepstudy")

# MixedModels.jl documentation (parametric bootstrap page), 10,000 replicates, shortest 95% intervals.
# Keys: (type, group, names) as in MixedModelBootstrap.shortestcovint().
PUBLISHED = {
    "dyestuff": {
        ("β", None, "(Intercept)"): ("β1", 1491.05, 1560.55),
        ("σ", "batch", "(Intercept)"): ("σ_batch", 0.0, 54.58),
        ("σ", "residual", None): ("σ", 35.53, 62.49),
    },
    "sleepstudy": {
        ("β", None, "(Intercept)"): ("β1", 238.62, 264.77),
        ("β", None, "days"): ("β2", 7.68, 13.50),
        ("σ", "subj", "(Intercept)"): ("σ_subj (Intercept)", 10.77, 33.49),
        ("σ", "subj", "days"): ("σ_subj days", 2.91, 7.62),
        ("ρ", "subj", "(Intercept), days"): ("ρ", -0.41, 1.0),
        ("σ", "residual", None): ("σ", 22.62, 28.45),
    },
}
PUBLISHED_SINGULAR = {"sleepstudy": (339, 10_000)}
PUBLISHED_MMJL_SECONDS = {"sleepstudy": (0.36, 1000)}  # 1,000 sleepstudy replicates in 0.36 s


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_lme4(nsim: int) -> dict:
    return run_rscript("lme4_bootmer", str(nsim))


def one_run(m, nsamp: int) -> tuple[dict, object]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = time.perf_counter()
        samp = jaxmm.parametricbootstrap(SEED, nsamp, m, progress=False)
        secs = time.perf_counter() - t
    return {
        "nsamp": nsamp,
        "seconds": secs,
        "seconds_per_replicate": secs / nsamp,
        "peak_rss_mib": maxrss_mib(),
        "n_singular": int(samp.issingular().sum()),
        "n_unconverged": int((~samp.converged).sum()),
        "warnings": [str(x.message) for x in w],
    }, samp


def fresh_child(name: str, nsamp: int) -> None:
    """In a new process: fit, then time one cold parametricbootstrap call; print JSON."""
    m = jaxmm.fit(FORMULAS[name], jaxmm.dataset(name), REML=False)
    r, _ = one_run(m, nsamp)
    r["jaxmm_code"] = CODE_VERSION
    print("FRESH" + json.dumps(r))


def run_fresh(name: str, nsamp: int) -> dict:
    print(f"jaxmm {name} nsamp={nsamp} in a fresh process ...", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fresh-child", name, str(nsamp)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("FRESH"))
    r = json.loads(line[len("FRESH") :])
    print(f"  {r['seconds']:.3f} s (compile included)", flush=True)
    if r["jaxmm_code"] != CODE_VERSION:
        print("  WARNING: the jaxmm sources changed between this process and the fresh one", flush=True)
    return r


def intervals(name: str, samp) -> list[dict]:
    ci = samp.shortestcovint()
    rows = []
    for _, r in ci.iterrows():
        group = None if r["group"] is None or (isinstance(r["group"], float) and np.isnan(r["group"])) else r["group"]
        names = None if r["names"] is None or (isinstance(r["names"], float) and np.isnan(r["names"])) else r["names"]
        pub = PUBLISHED.get(name, {}).get((r["type"], group, names))
        rows.append(
            {
                "parameter": pub[0] if pub else f"{r['type']} {group or ''} {names or ''}".strip(),
                "type": r["type"],
                "group": group,
                "names": names,
                "jaxmm_lower": float(r["lower"]),
                "jaxmm_upper": float(r["upper"]),
                "mixedmodels_jl_lower": pub[1] if pub else None,
                "mixedmodels_jl_upper": pub[2] if pub else None,
            }
        )
    return rows


def bench_model(name: str, nsamps: list[int], full: bool) -> dict:
    df = jaxmm.dataset(name)
    t = time.perf_counter()
    m = jaxmm.fit(FORMULAS[name], df, REML=False)
    fit_s = time.perf_counter() - t
    runs = []
    samp10k = None
    for n in nsamps:
        for phase in ("cold", "warm"):
            print(f"jaxmm {name} nsamp={n} {phase} ...", flush=True)
            r, samp = one_run(m, n)
            r["phase"] = phase
            runs.append(r)
            print(
                f"  {r['seconds']:.3f} s, {r['seconds_per_replicate'] * 1e3:.4f} ms/rep, "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB, singular {r['n_singular']}",
                flush=True,
            )
            if n == 10_000 and phase == "warm":
                samp10k = samp
    for n in (100_000, 1_000_000) if full else ():
        print(f"jaxmm {name} nsamp={n} ...", flush=True)
        r, _ = one_run(m, n)
        r["phase"] = "once (after the 10,000 runs)"
        runs.append(r)
        print(
            f"  {r['seconds']:.3f} s, {r['seconds_per_replicate'] * 1e3:.4f} ms/rep, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    by = {(r["nsamp"], r["phase"]): r for r in runs}
    compile_by_n = {n: by[(n, "cold")]["seconds"] - by[(n, "warm")]["seconds"] for n in nsamps}
    return {
        "formula": FORMULAS[name],
        "initial_fit_s": fit_s,
        "objective": m.objective,
        "runs": runs,
        "compile_s_by_nsamp": compile_by_n,
        "compile_s_first_small_run": compile_by_n[nsamps[0]],
        "intervals_10000": intervals(name, samp10k) if samp10k is not None else None,
        "n_singular_10000": int(samp10k.issingular().sum()) if samp10k is not None else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="also run nsamp=100,000 and 1,000,000")
    ap.add_argument("--lme4-nsim", type=int, default=300, help="bootMer replicates per model (default 300)")
    ap.add_argument("--fresh-child", nargs=2, metavar=("MODEL", "NSAMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fresh_child:
        fresh_child(args.fresh_child[0], int(args.fresh_child[1]))
        return
    nsamps = [100, 1000, 10_000]
    RESULTS.mkdir(parents=True, exist_ok=True)
    loads = {"lme4": load()}

    lres = run_lme4(args.lme4_nsim)
    jres = {}
    for name in MODELS:
        loads[f"jaxmm {name}"] = load()
        jres[name] = bench_model(name, nsamps, args.full)
        loads[f"jaxmm {name} fresh process"] = load()
        jres[name]["fresh_process_10000"] = run_fresh(name, 10_000)
    loads["end"] = load()

    summary = []
    for name in MODELS:
        j = jres[name]
        l_spr = lres[name]["seconds_per_replicate"]
        by = {(r["nsamp"], r["phase"]): r for r in j["runs"]}
        warm10k = by[(10_000, "warm")]
        cold10k = by[(10_000, "cold")]
        first_compile = j["compile_s_first_small_run"]
        row = {
            "model": name,
            "lme4_nsim": lres[name]["nsim"],
            "lme4_seconds_per_replicate": l_spr,
            "jaxmm_compile_first_small_run_s": first_compile,
            "jaxmm_compile_10000_shape_s": j["compile_s_by_nsamp"][10_000],
            "jaxmm_10000_warm_s": warm10k["seconds"],
            "jaxmm_10000_cold_s": cold10k["seconds"],
            "jaxmm_seconds_per_replicate_warm": {n: by[(n, "warm")]["seconds_per_replicate"] for n in nsamps},
            "ratio_steady_per_replicate_10000": l_spr / warm10k["seconds_per_replicate"],
            # as specified: (lme4 s/rep * 10000) / (compile of the first small run + warm 10000 time)
            "ratio_incl_compile_10000_first_small_compile": l_spr * 10_000 / (first_compile + warm10k["seconds"]),
            "jaxmm_10000_fresh_process_s": j["fresh_process_10000"]["seconds"],
            # a fresh process running one 10,000-replicate bootstrap (its compile included)
            "ratio_incl_compile_10000_fresh_process": l_spr * 10_000 / j["fresh_process_10000"]["seconds"],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in j["runs"]),
            "n_singular_10000": j["n_singular_10000"],
            "lme4_n_singular": lres[name]["n_singular_theta_eq_0"],
        }
        if name in PUBLISHED_MMJL_SECONDS:
            secs, n = PUBLISHED_MMJL_SECONDS[name]
            row["mixedmodels_jl_seconds_per_replicate"] = secs / n
            row["ratio_mixedmodels_jl_over_jaxmm_1000_warm"] = (secs / n) / by[(1000, "warm")]["seconds_per_replicate"]
            row["ratio_mixedmodels_jl_over_jaxmm_10000_warm"] = (secs / n) / warm10k["seconds_per_replicate"]
        summary.append(row)

    out = {
        "summary": summary,
        "jaxmm": jres,
        "lme4": lres,
        "published": {
            "mixedmodels_jl_intervals_10000": {
                k: {v[0]: [v[1], v[2]] for v in d.values()} for k, d in PUBLISHED.items()
            },
            "mixedmodels_jl_singular": {k: list(v) for k, v in PUBLISHED_SINGULAR.items()},
            "mixedmodels_jl_seconds": {k: {"seconds": v[0], "nsamp": v[1]} for k, v in PUBLISHED_MMJL_SECONDS.items()},
        },
        "meta": {"seed": SEED, **run_meta(loads, CODE_VERSION)},
    }
    (RESULTS / "bootstrap.json").write_text(json.dumps(out, indent=2, default=float, ensure_ascii=False))

    print("\n### Timing per run (jaxmm, seed 42, default batch size)\n")
    print("| model | nsamp | phase | seconds | ms / replicate | peak RSS (MiB) | singular | unconverged |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name in MODELS:
        for r in jres[name]["runs"]:
            print(
                f"| {name} | {r['nsamp']:,} | {r['phase'].split(' ')[0]} | {r['seconds']:.3f} | "
                f"{r['seconds_per_replicate'] * 1e3:.4f} | {r['peak_rss_mib']:.0f} | {r['n_singular']} | "
                f"{r['n_unconverged']} |"
            )

    print("\n### jaxmm vs lme4 bootMer\n")
    print(
        "| model | lme4 ms/rep (nsim) | jaxmm compile, first run (s) | jaxmm compile, 10k shape (s) | "
        "jaxmm 10k warm (s) | jaxmm 10k ms/rep warm | lme4/jaxmm steady | "
        "lme4/jaxmm incl. compile (first-run compile + warm 10k) | jaxmm 10k in a fresh process (s) | "
        "lme4/jaxmm incl. compile (fresh process) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        print(
            f"| {s['model']} | {s['lme4_seconds_per_replicate'] * 1e3:.2f} ({s['lme4_nsim']}) | "
            f"{s['jaxmm_compile_first_small_run_s']:.1f} | {s['jaxmm_compile_10000_shape_s']:.1f} | "
            f"{s['jaxmm_10000_warm_s']:.2f} | {s['jaxmm_seconds_per_replicate_warm'][10_000] * 1e3:.4f} | "
            f"{s['ratio_steady_per_replicate_10000']:.1f}× | "
            f"{s['ratio_incl_compile_10000_first_small_compile']:.1f}× | "
            f"{s['jaxmm_10000_fresh_process_s']:.2f} | {s['ratio_incl_compile_10000_fresh_process']:.1f}× |"
        )
    for s in summary:
        if "mixedmodels_jl_seconds_per_replicate" in s:
            print(
                f"\nMixedModels.jl (published, {s['model']}): "
                f"{s['mixedmodels_jl_seconds_per_replicate'] * 1e3:.2f} ms/rep; "
                f"jaxmm warm: {s['jaxmm_seconds_per_replicate_warm'][1000] * 1e3:.3f} ms/rep at 1,000, "
                f"{s['jaxmm_seconds_per_replicate_warm'][10_000] * 1e3:.3f} ms/rep at 10,000 "
                f"(MixedModels.jl / jaxmm: {s['ratio_mixedmodels_jl_over_jaxmm_1000_warm']:.2f}, "
                f"{s['ratio_mixedmodels_jl_over_jaxmm_10000_warm']:.2f})"
            )

    print("\n### Shortest 95% intervals, 10,000 replicates\n")
    print("| model | parameter | jaxmm | MixedModels.jl (published) |")
    print("|---|---|---|---|")
    for name in MODELS:
        for r in jres[name]["intervals_10000"]:
            pub = (
                "–"
                if r["mixedmodels_jl_lower"] is None
                else f"[{r['mixedmodels_jl_lower']:.2f}, {r['mixedmodels_jl_upper']:.2f}]"
            )
            print(f"| {name} | {r['parameter']} | [{r['jaxmm_lower']:.2f}, {r['jaxmm_upper']:.2f}] | {pub} |")
        pub_sing = PUBLISHED_SINGULAR.get(name)
        print(
            f"| {name} | singular replicates | {jres[name]['n_singular_10000']} of 10,000 | "
            f"{'–' if pub_sing is None else f'{pub_sing[0]} of {pub_sing[1]:,}'} |"
        )
    print(f"\nloadavg before each phase: {loads}")
    print(f"jaxmm code: {CODE_VERSION}")
    print("wrote bench/results/bootstrap.json")


if __name__ == "__main__":
    main()
