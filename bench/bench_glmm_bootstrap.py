"""jaxmm's parametric bootstrap of generalized linear mixed models against lme4's bootMer: time and distributions.

Run from the repository root (about 25 minutes on a loaded 2-core CPU with the defaults, 20 of them lme4's verbagg):

    PYTHONPATH=. python bench/bench_glmm_bootstrap.py [--nsamp 2000 64] [--lme4-nsim 300 12] [--reuse-lme4]

Models (Laplace, lme4's nAGQ = 1 and jaxmm's fast=False):
  cbpp:    incidence/size ~ 1 + period + (1|herd), weights = size (binomial; jaxmm: prop = incidence/size)
  verbagg: r2 ~ 1 + anger + gender + btype + situ + (1|id) + (1|item) (bernoulli)
lme4: `Rscript bench/lme4_glmm_bootmer.R <nsim cbpp> <nsim verbagg>` (bootMer, type parametric,
use.u = FALSE, seed 42), run in a scratch folder; its replicate tables are kept as
bench/results/lme4_glmm_bootmer_<model>.csv and its timings in bench/results/lme4_glmm_bootmer.json
(`--reuse-lme4` reads those instead of running R again). Its columns are jaxmm's `samp.tbl` obj, β..,
θ.. in order.
jaxmm, per model in a fresh Python process (no compilation cache): the fit, then
`parametricbootstrap(42, nsamp, m)` twice: "cold" (its compile included) and "warm" (steady state),
with OPENBLAS_NUM_THREADS=1 (see CHILD_ENV).

Ratios: lme4 s/replicate over jaxmm's warm s/replicate (steady), and over jaxmm's cold run per
replicate (the whole first bootstrap of a session, compile included). The distributions: per
parameter the two-sample Kolmogorov-Smirnov p-value and the 2.5, 50, 97.5 % quantiles of each.
Writes bench/results/glmm_bootstrap.json and prints markdown tables.
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
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, ROOT, code_version, load, run_meta

import jaxmm

CODE_VERSION = code_version()
SEED = 42
MODELS = ("cbpp", "verbagg")
QUANTILES = (0.025, 0.5, 0.975)
# XLA's CPU LAPACK calls (verbagg: a 346 x 346 Cholesky per PIRLS step) go to scipy's OpenBLAS,
# which by default starts threads of its own beside XLA's: on this shared 2-core box under load
# that made one such Cholesky take 130 ms instead of 3 ms.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1"}


def fit(name: str):
    if name == "cbpp":
        d = jaxmm.dataset("cbpp")
        return jaxmm.fit(
            "prop ~ 1 + period + (1|herd)", d.assign(prop=d["incidence"] / d["size"]), family="binomial", weights="size"
        )
    d = jaxmm.dataset("verbagg")
    return jaxmm.fit(
        "r2 ~ 1 + anger + gender + btype + situ + (1|id) + (1|item)",
        d.assign(r2=(d["r2"] == "Y").astype(float)),
        family="bernoulli",
    )


def fresh_child(name: str, nsamp: int) -> None:
    """In a new process: fit, then a cold and a warm parametricbootstrap; print JSON."""
    t = time.perf_counter()
    m = fit(name)
    out = {
        "fit_s": time.perf_counter() - t,
        "nsamp": nsamp,
        "jaxmm_code": CODE_VERSION,
        "lane_width": jaxmm.bootstrap.lane_width(m, "cpu"),
    }
    for phase in ("cold", "warm"):
        out[f"load_before_{phase}"] = load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            samp = jaxmm.parametricbootstrap(SEED, nsamp, m, progress=False)
            out[f"{phase}_s"] = time.perf_counter() - t
    out.update(
        n_unconverged=int((~samp.converged).sum()),
        n_singular=int(samp.issingular().sum()),
        niter_mean=float(samp.replicates.niter.mean()),
        niter_max=int(samp.replicates.niter.max()),
        tbl={c: samp.tbl[c].tolist() for c in samp.tbl.columns},
    )
    print("FRESH" + json.dumps(out))


def run_fresh(name: str, nsamp: int) -> dict:
    print(f"jaxmm {name} nsamp={nsamp} in a fresh process ...", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fresh-child", name, str(nsamp)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, **CHILD_ENV})
    r = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("FRESH"))[len("FRESH") :])
    print(f"  fit {r['fit_s']:.1f} s, cold {r['cold_s']:.1f} s, warm {r['warm_s']:.2f} s", flush=True)
    if r["jaxmm_code"] != CODE_VERSION:
        print("  WARNING: the jaxmm sources changed between this process and the fresh one", flush=True)
    return r


def run_bootmer(nsims: list[int]) -> dict:
    """bench/lme4_glmm_bootmer.R in a scratch folder; keep its timings and replicate tables."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "jaxmm").mkdir()
        (scratch / "jaxmm" / "data").symlink_to(ROOT / "jaxmm" / "data")
        (scratch / "bench" / "results").mkdir(parents=True)
        cmd = ["Rscript", str(ROOT / "bench" / "lme4_glmm_bootmer.R"), *map(str, nsims)]
        print("running", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=scratch, check=True)
        for name in ("lme4_glmm_bootmer.json", *(f"lme4_glmm_bootmer_{m}.csv" for m in MODELS)):
            shutil.copyfile(scratch / "bench" / "results" / name, RESULTS / name)
    return json.loads((RESULTS / "lme4_glmm_bootmer.json").read_text())


def compare(jaxmm_tbl: dict, lme4: pd.DataFrame) -> list[dict]:
    """Per parameter (obj, β.., θ..; lme4's columns in the same order): KS p-value and quantiles."""
    ours = pd.DataFrame(jaxmm_tbl)
    names = ["obj"] + [c for c in ours.columns if c.startswith("β")] + [c for c in ours.columns if c.startswith("θ")]
    rows = []
    for name, theirs in zip(names, lme4.columns):
        a, b = ours[name].dropna().to_numpy(), lme4[theirs].dropna().to_numpy()
        rows.append(
            {
                "par": name,
                "lme4_column": theirs,
                "ks_p": float(sps.ks_2samp(a, b).pvalue),
                "jaxmm_q": np.quantile(a, QUANTILES).tolist(),
                "lme4_q": np.quantile(b, QUANTILES).tolist(),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsamp", type=int, nargs=2, default=[2000, 64], metavar=("CBPP", "VERBAGG"))
    ap.add_argument("--lme4-nsim", type=int, nargs=2, default=[300, 12], metavar=("CBPP", "VERBAGG"))
    ap.add_argument("--reuse-lme4", action="store_true")
    ap.add_argument("--fresh-child", nargs=2, metavar=("MODEL", "NSAMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fresh_child:
        fresh_child(args.fresh_child[0], int(args.fresh_child[1]))
        return
    loads = {"start": load()}
    if args.reuse_lme4:
        lme4 = json.loads((RESULTS / "lme4_glmm_bootmer.json").read_text())
    else:
        lme4 = run_bootmer(args.lme4_nsim)
    loads["after lme4"] = load()
    record = {"models": {}}
    for name, nsamp in zip(MODELS, args.nsamp):
        j = run_fresh(name, nsamp)
        loads[f"after jaxmm {name}"] = load()
        l_spr = lme4[name]["seconds_per_replicate"]
        table = pd.read_csv(RESULTS / f"lme4_glmm_bootmer_{name}.csv")
        record["models"][name] = {
            "lme4": {k: v for k, v in lme4[name].items() if k != "estimate"},
            "jaxmm": {k: v for k, v in j.items() if k != "tbl"},
            "lme4_per_replicate_s": l_spr,
            "jaxmm_warm_per_replicate_s": j["warm_s"] / nsamp,
            "jaxmm_cold_per_replicate_s": j["cold_s"] / nsamp,
            "ratio_steady": l_spr / (j["warm_s"] / nsamp),
            "ratio_incl_compile": l_spr / (j["cold_s"] / nsamp),
            "distributions": compare(j["tbl"], table),
        }
    record["lme4_meta"] = lme4.get("_meta")
    record["jaxmm_env"] = CHILD_ENV
    record["meta"] = run_meta(loads, CODE_VERSION)
    (RESULTS / "glmm_bootstrap.json").write_text(json.dumps(record, indent=1))
    print(
        "\n| model | lme4 s/rep (nsim) | jaxmm fit (s) | jaxmm cold (s, nsamp) | jaxmm warm ms/rep "
        "| lme4/jaxmm steady | lme4/jaxmm incl. compile |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in record["models"].items():
        print(
            f"| {name} | {r['lme4_per_replicate_s']:.3f} ({r['lme4']['nsim']}) | {r['jaxmm']['fit_s']:.1f} | "
            f"{r['jaxmm']['cold_s']:.1f} ({r['jaxmm']['nsamp']}) | {1e3 * r['jaxmm_warm_per_replicate_s']:.2f} | "
            f"{r['ratio_steady']:.0f}× | {r['ratio_incl_compile']:.1f}× |"
        )
    print("\n| model | par | KS p | jaxmm 2.5/50/97.5 % | lme4 2.5/50/97.5 % |")
    print("|---|---|---:|---|---|")
    for name, r in record["models"].items():
        for d in r["distributions"]:
            q = lambda v: " / ".join(f"{x:.4g}" for x in v)
            print(f"| {name} | {d['par']} | {d['ks_p']:.3f} | {q(d['jaxmm_q'])} | {q(d['lme4_q'])} |")
    print(f"\nloads: {loads}")


if __name__ == "__main__":
    main()
