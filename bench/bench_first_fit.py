"""The first answer of a fresh process: first fits and a 10,000-replicate bootstrap, with jaxmm's
compile cache empty and then warm, beside lme4's first calls and bootMer, in one run.

    PYTHONPATH=. python bench/bench_first_fit.py [--bootmer-nsim 300] [--cases sleepstudy,cbpp]
    PYTHONPATH=. python bench/bench_first_fit.py --ref f04f795 --skip-lme4   # jaxmm of an earlier commit

Each jaxmm case runs in a new Python process (`--child CASE`) whose JAXMM_CACHE_DIR is a folder of
its own: first empty (everything compiles), then, in a second new process, warm (what the first
stored). A child imports jaxmm and the JAX modules it uses (`modules_s`: the import, measured in
bench_import.py), prepares the data, then times what a user waits for:

  sleepstudy  jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)")
  kb07        jaxmm.fit(KB07) on bench_ddf.kb07_like() (56 subjects x 32 items, 4 correlated terms each)
  cbpp        jaxmm.fit("incidence/size ~ period + (1|herd)", binomial, weights=size)
  grouseticks jaxmm.fit("ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location)", poisson)
  bootstrap   sleepstudy's fit, then parametricbootstrap(42, 10000, m) (`boot_s`)
  cli         `jaxmm bootstrap --dataset sleepstudy -n 10000` as a command: the whole process

with `optsum.compile_s` (compiling, or loading from the cache) and the process's CPU seconds in the
call (`fit_cpu_s`, `boot_cpu_s`: all its threads; less sensitive than the wall time to other
people's load on a shared machine). lme4 (bench/lme4_first_fit.R, one
fresh R process): lme4's load, each model's first and second call, bootMer's time per replicate
on sleepstudy (x 10,000 for the ratio). os.getloadavg() is recorded before each phase. Writes
bench/results/first_fit.json and prints the table of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the cache folder a child was given: importing _common switches jaxmm's cache off for its process
CHILD_CACHE = os.environ.get("JAXMM_CACHE_DIR")

from _common import RESULTS, ROOT, code_version, load, run_meta, run_rscript  # noqa: E402

FITS = {
    "sleepstudy": ("reaction ~ 1 + days + (1 + days|subj)", {}),
    "kb07": (None, {}),  # bench_ddf.KB07
    "cbpp": ("prop ~ 1 + period + (1|herd)", {"family": "binomial", "weights": "size"}),
    "grouseticks": (
        "ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location)",
        {"family": "poisson"},
    ),
}
CASES = (*FITS, "bootstrap", "cli")
NSAMP = 10_000
CLI = ["-m", "jaxmm", "bootstrap", "--dataset", "sleepstudy", "-f", FITS["sleepstudy"][0], "-n", str(NSAMP), "-q"]
# The targets of issue 23 (seconds; the bootstrap's as multiples of bootMer's time for 10,000 replicates)
TARGETS = {"empty": {"sleepstudy": 1.5, "kb07": 10.0, "cbpp": 4.0, "grouseticks": 4.0, "bootstrap": 80, "cli": 80}}
TARGETS["warm"] = {**{name: 0.3 for name in FITS}, "bootstrap": 200, "cli": 200}


def child(case: str) -> None:
    """In a fresh process: time one case, print one JSON line."""
    os.environ["JAXMM_CACHE_DIR"] = CHILD_CACHE
    start = time.perf_counter()
    import jax  # noqa: F401

    import jaxmm
    import jaxmm.bootstrap
    import jaxmm.models

    modules_s = time.perf_counter() - start
    if case == "kb07":
        from bench_ddf import KB07, kb07_like

        formula, data, kwargs = KB07, kb07_like(), {}
    else:
        formula, kwargs = FITS["sleepstudy" if case == "bootstrap" else case]
        data = jaxmm.dataset("sleepstudy" if case == "bootstrap" else case)
        if case == "cbpp":
            data = data.assign(prop=data["incidence"] / data["size"])
    t, cpu = time.perf_counter(), time.process_time()
    m = jaxmm.fit(formula, data, **kwargs)
    out = {"modules_s": modules_s, "fit_s": time.perf_counter() - t, "compile_s": m.optsum.compile_s}
    out["fit_cpu_s"] = time.process_time() - cpu  # all threads: less sensitive to other people's load
    out.update(fmin=m.optsum.fmin, niter=m.optsum.niter)
    if case == "bootstrap":
        t, cpu = time.perf_counter(), time.process_time()
        samp = jaxmm.parametricbootstrap(42, NSAMP, m, progress=False)
        out["boot_s"], out["boot_cpu_s"] = time.perf_counter() - t, time.process_time() - cpu
        out["boot_objective_sum"] = float(samp.replicates.objective.sum())
    out["jaxmm_file"] = jaxmm.__file__
    print("CHILD" + json.dumps(out))


def run_case(case: str, cache: Path, sources: Path) -> dict:
    """One case in a new process that runs jaxmm from `sources` (a copy taken when the run started:
    the executables' cache is keyed by the sources, which other people may be editing meanwhile)."""
    env = {**os.environ, "JAXMM_CACHE_DIR": str(cache), "PYTHONPATH": str(sources)}
    start = time.perf_counter()
    if case == "cli":
        subprocess.run([sys.executable, *CLI], cwd=sources, env=env, check=True, capture_output=True)
        return {"process_s": time.perf_counter() - start}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case]
    proc = subprocess.run(cmd, cwd=sources, env=env, check=True, capture_output=True, text=True)
    out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("CHILD"))[len("CHILD") :])
    out["process_s"] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--bootmer-nsim", type=int, default=300, help="bootMer replicates timed (default 300)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    ap.add_argument("--ref", help="run jaxmm as of this git commit (git archive) instead of the working tree")
    ap.add_argument("--skip-lme4", action="store_true", help="jaxmm only (no ratios); writes first_fit_<ref>.json")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    cases = args.cases.split(",")
    folder = Path(tempfile.mkdtemp(prefix="jaxmm-first-fit-"))
    sources = folder / "src"
    if args.ref:
        sources.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", args.ref, "jaxmm"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(sources)], input=archive.stdout, check=True)
        code = {"git_ref": args.ref}
    else:
        code = code_version()
        shutil.copytree(ROOT / "jaxmm", sources / "jaxmm", ignore=shutil.ignore_patterns("__pycache__"))
    loads: dict[str, list[float]] = {}
    runs: dict[str, dict[str, dict]] = {"empty": {}, "warm": {}}
    try:
        for phase in ("empty", "warm"):
            for case in cases:
                loads[f"jaxmm {case} {phase}"] = load()
                r = runs[phase][case] = run_case(case, folder / case, sources)
                shown = {k: round(v, 3) for k, v in r.items() if k.endswith("_s")}
                print(f"jaxmm {case:12s} cache {phase:5s}: {shown}", flush=True)
        if args.skip_lme4:
            record = {"jaxmm": runs, "meta": run_meta(loads, code)}
            (RESULTS / f"first_fit_{args.ref or 'worktree'}.json").write_text(json.dumps(record, indent=1) + "\n")
            return
        kb07_csv = folder / "kb07.csv"
        from bench_ddf import kb07_like

        kb07_like().to_csv(kb07_csv, index=False)
        loads["lme4"] = load()
        lme4 = run_rscript("lme4_first_fit", str(kb07_csv), str(args.bootmer_nsim))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bootmer_10k = lme4["bootmer_sleepstudy"]["ms_per_replicate"] * NSAMP / 1000.0
    summary = {}
    for phase, by_case in runs.items():
        for case, r in by_case.items():
            if case in FITS:
                seconds, target = r["fit_s"], TARGETS[phase][case]
                summary[f"{case} {phase}"] = {"seconds": seconds, "target_s": target, "met": seconds <= target}
            else:
                seconds = r["boot_s"] if case == "bootstrap" else r["process_s"]
                ratio, target = bootmer_10k / seconds, TARGETS[phase][case]
                summary[f"{case} {phase}"] = {"seconds": seconds, "x_bootmer": ratio, "target_x": target}
                summary[f"{case} {phase}"]["met"] = ratio >= target
    record = {
        "jaxmm": runs,
        "lme4": lme4,
        "bootmer_10000_s": bootmer_10k,
        "summary": summary,
        "meta": run_meta(loads, code),
    }
    (RESULTS / "first_fit.json").write_text(json.dumps(record, indent=1) + "\n")
    print_table(runs, lme4, bootmer_10k, summary)


def print_table(runs: dict, lme4: dict, bootmer_10k: float, summary: dict) -> None:
    print("\n| case | jaxmm, cache empty (s) | compile_s | jaxmm, cache warm (s) | compile_s | lme4 first call (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in FITS:
        if case not in runs["empty"]:
            continue
        e, w = runs["empty"][case], runs["warm"][case]
        print(
            f"| {case} | {e['fit_s']:.2f} | {e['compile_s']:.2f} | {w['fit_s']:.2f} | {w['compile_s']:.2f} | "
            f"{lme4[case]['first_s']:.2f} |"
        )
    per_rep = lme4["bootmer_sleepstudy"]["ms_per_replicate"]
    print(f"\nbootMer: {per_rep:.2f} ms per replicate, {bootmer_10k:.1f} s for 10,000")
    for case in ("bootstrap", "cli"):
        for phase in ("empty", "warm"):
            s = summary.get(f"{case} {phase}")
            if s:
                print(f"{case} {phase}: {s['seconds']:.2f} s, {s['x_bootmer']:.0f}x bootMer (target {s['target_x']}x)")
    print("\ntargets:", {k: v["met"] for k, v in summary.items()})


if __name__ == "__main__":
    main()
