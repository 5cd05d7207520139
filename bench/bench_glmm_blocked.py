"""GLMMs with many random effects (PIRLS on the blocked structure, glmm/laplace.py) against lme4 and
lme-python, side by side in one run:

    PYTHONPATH=. python bench/bench_glmm_blocked.py [--nsamp 400 64] [--lme4-nsim 200 20] [--no-insteval]

Bootstraps (Laplace, lme4's nAGQ = 1, jaxmm's fast=False; seed 42):
  cbpp:        incidence/size ~ 1 + period + (1|herd), weights = size (binomial, q + p = 19)
  grouseticks: ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location) (poisson, q = 584:
               index has one level per row, nested in brood, nested in location)
jaxmm per model in a fresh process (OPENBLAS_NUM_THREADS=1): the fit, a cold parametricbootstrap
(compile included), then the best of two warm ones (steady state). lme4: bootMer (use.u = FALSE) by
`Rscript bench/lme4_glmm_blocked.R boot ...`. lme-python 0.2.7 (/tmp/lmepy/bin/python, if present):
`boot_glmer(formula, data, fit, nsim, seed, n_jobs=2)`, best of two after a warm-up; it draws around
the fitted conditional modes (lme4's use.u = TRUE), a cheaper problem for its refits.

The large fit: insteval with y3 = (y > 3), `y3 ~ 1 + service + (1|s) + (1|d) + (1|dept)` (bernoulli,
q = 4114, n = 73421), fitted by jaxmm (Laplace and fast=True, lme4's nAGQ = 0) and by glmer (nAGQ = 1
and 0), each in a fresh process with its wall time and peak resident memory (ru_maxrss; R's under
/usr/bin/time); then jaxmm's bootstrap of 2 replicates of the Laplace model, with its peak memory.
Writes bench/results/glmm_blocked.json and prints markdown tables, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ROOT, code_version, load, run_meta

CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1"}
LMEPY = Path("/tmp/lmepy/bin/python")
FORMULAS = {
    "cbpp": "incidence/size ~ 1 + period + (1|herd)",
    "grouseticks": "ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location)",
    "insteval": "y3 ~ 1 + service + (1|s) + (1|d) + (1|dept)",
}


def model(name: str, fast: bool = False):
    import jaxmm

    if name == "cbpp":
        d = jaxmm.dataset("cbpp")
        return jaxmm.fit(
            "prop ~ 1 + period + (1|herd)", d.assign(prop=d["incidence"] / d["size"]), family="binomial", weights="size"
        )
    if name == "grouseticks":
        return jaxmm.fit(FORMULAS[name], jaxmm.dataset("grouseticks"), family="poisson")
    d = jaxmm.dataset("insteval")
    return jaxmm.fit(FORMULAS[name], d.assign(y3=(d["y"] > 3).astype(float)), family="bernoulli", fast=fast)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_boot(name: str, nsamp: int) -> dict:
    import jaxmm

    t = time.perf_counter()
    m = model(name)
    out = {"fit_s": time.perf_counter() - t, "objective": m.objective, "nsamp": nsamp, "load_before": load()}
    t = time.perf_counter()
    samp = jaxmm.parametricbootstrap(42, nsamp, m, progress=False)
    out["cold_s"] = time.perf_counter() - t
    warm = []
    for seed in (43, 44):
        t = time.perf_counter()
        samp = jaxmm.parametricbootstrap(seed, nsamp, m, progress=False)
        warm.append(time.perf_counter() - t)
    out.update(warm_s=min(warm), n_unconverged=int((~samp.converged).sum()), load_after=load(), peak_mb=peak_mb())
    out["niter_mean"] = float(samp.replicates.niter.mean())
    return out


def child_insteval(fast: bool, nsamp: int) -> dict:
    import jaxmm

    t = time.perf_counter()
    m = model("insteval", fast)
    out = {"fast": fast, "fit_s": time.perf_counter() - t, "objective": m.objective, "theta": list(m.theta)}
    out.update(beta=m.beta.tolist(), converged=m.optsum.converged, fit_peak_mb=peak_mb(), load_after_fit=load())
    if nsamp:
        t = time.perf_counter()
        samp = jaxmm.parametricbootstrap(42, nsamp, m, progress=False)
        out.update(boot_s=time.perf_counter() - t, boot_nsamp=nsamp, boot_converged=int(samp.converged.sum()))
        out["boot_peak_mb"] = peak_mb()
    return out


def in_child(*args: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("CHILD")]
    if not lines:
        return {"error": proc.stderr[-2000:]}
    return json.loads(lines[-1][len("CHILD") :])


LMEPY_CODE = """
import json, sys, time, os
import pandas as pd
import lme_python as lp
name, nsim = sys.argv[1], int(sys.argv[2])
formula = {formulas}[name]
if name == "cbpp":
    d = pd.read_csv("jaxmm/data/cbpp.csv", dtype={{"herd": str, "period": str}})
    d["prop"] = d["incidence"] / d["size"]
    formula = "prop ~ 1 + period + (1|herd)"
    fit = lp.glmer_weighted(formula, d, "binomial", weights=[float(w) for w in d["size"]])
else:
    d = pd.read_csv("jaxmm/data/grouseticks.csv", dtype={{c: str for c in ("index", "brood", "location", "year")}})
    fit = lp.glmer(formula, d, "poisson")
lp.boot_glmer(formula, d, fit, nsim=4, seed=1, n_jobs=2)
times = []
for seed in (2, 3):
    t = time.perf_counter()
    lp.boot_glmer(formula, d, fit, nsim=nsim, seed=seed, n_jobs=2)
    times.append(time.perf_counter() - t)
print("LMEPY" + json.dumps({{"version": lp.__version__ if hasattr(lp, "__version__") else "0.2.7", "nsim": nsim,
      "seconds_per_replicate": min(times) / nsim, "call": "boot_glmer(formula, data, fit, nsim, seed, n_jobs=2)",
      "load": [round(x, 2) for x in os.getloadavg()]}}))
"""


def run_lmepy(name: str, nsim: int) -> dict:
    if not LMEPY.exists():
        return {"error": f"{LMEPY} not found"}
    code = LMEPY_CODE.format(formulas=json.dumps(FORMULAS))
    proc = subprocess.run([str(LMEPY), "-c", code, name, str(nsim)], cwd=ROOT, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("LMEPY")]
    return json.loads(lines[-1][len("LMEPY") :]) if lines else {"error": proc.stderr[-2000:]}


def run_r(*args: str, timed: bool = False) -> dict:
    """bench/lme4_glmm_blocked.R with `args` and a scratch output file; `timed`: under /usr/bin/time -v,
    with its peak resident memory (MB)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out.json"
        cmd = ["Rscript", "bench/lme4_glmm_blocked.R", *args, str(out)]
        if timed:
            cmd = ["/usr/bin/time", "-v", *cmd]
        print("running", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        print(proc.stdout, end="", flush=True)
        if not out.exists():
            return {"error": proc.stderr[-2000:]}
        result = json.loads(out.read_text())
        for line in proc.stderr.splitlines():
            if "Maximum resident set size" in line:
                result["peak_mb"] = int(line.split(":")[1]) / 1024
        return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsamp", type=int, nargs=2, default=[400, 64], metavar=("CBPP", "GROUSETICKS"))
    ap.add_argument("--lme4-nsim", type=int, nargs=2, default=[200, 20], metavar=("CBPP", "GROUSETICKS"))
    ap.add_argument("--lmepy-nsim", type=int, nargs=2, default=[200, 40], metavar=("CBPP", "GROUSETICKS"))
    ap.add_argument("--no-insteval", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        out = child_boot(rest[0], int(rest[1])) if kind == "boot" else child_insteval(rest[0] == "fast", int(rest[1]))
        print("CHILD" + json.dumps(out))
        return
    loads = {"start": load()}
    record: dict = {"bootstrap": {}, "insteval": {}}
    lme4 = run_r("boot", *map(str, args.lme4_nsim))
    loads["after lme4 bootMer"] = load()
    for i, name in enumerate(("cbpp", "grouseticks")):
        print(f"jaxmm {name} ...", flush=True)
        j = in_child("boot", name, str(args.nsamp[i]))
        loads[f"after jaxmm {name}"] = load()
        peer = run_lmepy(name, args.lmepy_nsim[i])
        loads[f"after lme-python {name}"] = load()
        r = {"lme4": lme4.get(name, lme4), "jaxmm": j, "lme_python": peer}
        if "warm_s" in j and name in lme4:
            r["jaxmm_warm_ms"] = 1e3 * j["warm_s"] / j["nsamp"]
            r["ratio_steady"] = lme4[name]["seconds_per_replicate"] / (j["warm_s"] / j["nsamp"])
            r["ratio_incl_compile"] = lme4[name]["seconds_per_replicate"] / (j["cold_s"] / j["nsamp"])
            if "seconds_per_replicate" in peer:
                r["lme_python_over_jaxmm"] = peer["seconds_per_replicate"] / (j["warm_s"] / j["nsamp"])
        record["bootstrap"][name] = r
        print(json.dumps({k: v for k, v in r.items() if k != "lme4"}, default=str)[:600], flush=True)
    if not args.no_insteval:
        for fast in (False, True):
            key = "fast" if fast else "laplace"
            print(f"jaxmm insteval {key} ...", flush=True)
            record["insteval"][f"jaxmm_{key}"] = in_child("insteval", key, "0" if fast else "2")
            loads[f"after jaxmm insteval {key}"] = load()
            print(json.dumps(record["insteval"][f"jaxmm_{key}"])[:600], flush=True)
        for nagq in (1, 0):
            record["insteval"][f"glmer_nAGQ{nagq}"] = run_r("insteval", str(nagq), timed=True)
            loads[f"after glmer insteval nAGQ={nagq}"] = load()
    record["lme4_meta"] = lme4.get("_meta")
    record["jaxmm_env"] = CHILD_ENV
    record["meta"] = run_meta(loads, code_version())
    (RESULTS / "glmm_blocked.json").write_text(json.dumps(record, indent=1, default=str))
    print("\n| model | bootMer ms/rep | lme-python ms/rep | jaxmm warm ms/rep | cold ms/rep | bootMer/jaxmm ", end="")
    print("| lme-python/jaxmm |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in record["bootstrap"].items():
        if "jaxmm_warm_ms" not in r:
            print(f"| {name} | failed: {str(r)[:200]} |")
            continue
        lp = r["lme_python"].get("seconds_per_replicate")
        print(
            f"| {name} | {1e3 * r['lme4']['seconds_per_replicate']:.1f} | {'-' if lp is None else f'{1e3 * lp:.1f}'} | "
            f"{r['jaxmm_warm_ms']:.2f} | {1e3 * r['jaxmm']['cold_s'] / r['jaxmm']['nsamp']:.1f} | "
            f"{r['ratio_steady']:.0f}x | {r.get('lme_python_over_jaxmm', float('nan')):.1f}x |"
        )
    if record["insteval"]:
        print("\n| insteval y > 3 (bernoulli) | fit s | peak MB | -2 logLik |")
        print("|---|---:|---:|---:|")
        for key, r in record["insteval"].items():
            fit = r.get("insteval", r)  # R's record nests the fit
            seconds, objective = fit.get("fit_s", fit.get("fit_seconds")), fit.get("objective")
            mb = r.get("fit_peak_mb", r.get("peak_mb"))
            print(f"| {key} | {seconds} | {mb} | {objective} |")
            if "boot_s" in r:
                print(f"| {key} bootstrap of {r['boot_nsamp']} | {r['boot_s']:.1f} | {r['boot_peak_mb']:.0f} | |")
    print(f"\nloads: {loads}")


if __name__ == "__main__":
    main()
