"""Solver iterations per bootstrap replicate: mean, 99th percentile and maximum, per model.

A vmapped while-loop runs until its slowest lane finishes, and the bootstrap refits each lane in
rounds of at most `ROUND_MAXITER` iterations; what a replicate costs is its iteration count
(`samp.replicates.niter`: evaluations of the objective with its derivatives, summed over rounds).
Also records the wall time of a warm run (the kernel compiled) and the converged count.

    PYTHONPATH=. python bench/bench_iterations.py [--nsamp 2000] [--out bench/results/iterations.json]
"""

import argparse
import json
import time

from _common import FORMULAS, RESULTS, code_version

import jaxmm

GLMMS = {
    "cbpp": ("prop ~ 1 + period + (1 | herd)", "binomial", "size"),
    "grouseticks": ("ticks ~ 1 + year + (1 | brood) + (1 | location)", "poisson", None),
}


def models():
    for name in ("dyestuff", "sleepstudy", "penicillin", "pastes"):
        yield name, jaxmm.fit(FORMULAS[name], jaxmm.dataset(name))
    cbpp = jaxmm.dataset("cbpp")
    data = {"cbpp": cbpp.assign(prop=cbpp["incidence"] / cbpp["size"]), "grouseticks": jaxmm.dataset("grouseticks")}
    for name, (formula, family, weights) in GLMMS.items():
        yield name, jaxmm.fit(formula, data[name], family=family, weights=weights)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamp", type=int, default=2000)
    ap.add_argument("--glmm-nsamp", type=int, default=200)
    ap.add_argument("--out", default=str(RESULTS / "iterations.json"))
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    code = code_version()
    out = {"code": code, "label": args.label, "models": {}}
    for name, m in models():
        nsamp = args.glmm_nsamp if name in GLMMS else args.nsamp
        jaxmm.parametricbootstrap(1, 64, m, progress=False)  # compile
        t0 = time.perf_counter()
        samp = jaxmm.parametricbootstrap(42, nsamp, m, progress=False)
        wall = time.perf_counter() - t0
        niter = samp.replicates.niter
        row = {
            "nsamp": nsamp,
            "mean": float(niter.mean()),
            "p99": float(sorted(niter)[int(0.99 * (nsamp - 1))]),
            "max": int(niter.max()),
            "converged": int(samp.converged.sum()),
            "wall_s": round(wall, 3),
            "objective_sum": float(samp.objective.sum()),
        }
        out["models"][name] = row
        print(name, row, flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
