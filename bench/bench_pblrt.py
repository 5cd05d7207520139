"""Parametric-bootstrap likelihood-ratio tests: jaxmm.pblrt against pbkrtest's PBmodcomp.

Two sleepstudy comparisons (ML fits, 2,000 replicates each):
  slope: reaction ~ 1 + (1 + days | subj)   vs  reaction ~ 1 + days + (1 + days | subj)  (a fixed effect)
  ranef: reaction ~ 1 + days + (1 | subj)   vs  reaction ~ 1 + days + (1 + days | subj)  (a boundary test)

Runs `Rscript bench/pbkrtest_pbmodcomp.R 2000` (PBmodcomp, one core; its reference LRT values go to
bench/results/pbkrtest_<comparison>.csv), then jaxmm.pblrt twice per comparison (cold: compile
included; warm: the same call again), and compares the two reference distributions: the two-sample
Kolmogorov-Smirnov test, and the quantiles 0.5/0.9/0.95/0.99 of each with their Monte Carlo
standard errors (sqrt(q (1 - q) / n) / f(x_q), f a kernel density estimate at the quantile).
The two programs draw different random responses, so the distributions can agree only within
Monte Carlo error; a paired check removes it: lme4 refits the first 300 responses jaxmm simulated
(the largest differences of LRT* and of each model's deviance are recorded).
Writes bench/results/pblrt.json.

    PYTHONPATH=. python bench/bench_pblrt.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time

import numpy as np
import pandas as pd
from _common import RESULTS, ROOT, code_version, load, run_meta, run_rscript
from scipy import stats as sps

import jaxmm
from jaxmm.bootstrap import simulated_responses

NSAMP = 2000
SEED = 42
PROBS = (0.5, 0.9, 0.95, 0.99)
PAIRED = 300  # replicates refitted by lme4 as well
LARGE = "reaction ~ 1 + days + (1 + days | subj)"
SMALL = {"slope": "reaction ~ 1 + (1 + days | subj)", "ranef": "reaction ~ 1 + days + (1 | subj)"}


def quantiles_with_error(values: np.ndarray) -> list[dict]:
    kde = sps.gaussian_kde(values)
    out = []
    for q in PROBS:
        x = float(np.quantile(values, q))
        out.append({"q": q, "value": x, "mc_se": float(np.sqrt(q * (1 - q) / len(values)) / kde(x)[0])})
    return out


PAIRED_R = """
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
sleep <- read.csv("jaxmm/data/sleepstudy.csv"); sleep$subj <- factor(sleep$subj)
ys <- read.csv(args[1])
fits <- lapply(args[3:4], function(f) lmer(as.formula(f), sleep, REML = FALSE))
dev <- t(sapply(ys, function(y) sapply(fits, function(m) deviance(suppressMessages(refit(m, y))))))
write.csv(dev, args[2], row.names = FALSE)
"""


def paired_check(test, name: str, nsamp: int) -> dict:
    """Refit the first `nsamp` responses jaxmm simulated with lme4 (refit(), as PBmodcomp does):
    the same responses, so the LRT* differ only by the two programs' fits, not by Monte Carlo."""
    small = test.fits[0].model
    ys = simulated_responses(small, SEED, nsamp)
    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(ys.T).to_csv(f"{tmp}/y.csv", index=False)
        subprocess.run(
            ["Rscript", "-e", PAIRED_R, f"{tmp}/y.csv", f"{tmp}/dev.csv", SMALL[name], LARGE],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        lme4 = pd.read_csv(f"{tmp}/dev.csv").to_numpy()
    ours = np.c_[test.fits[0].objective[:nsamp], test.fits[1].objective[:nsamp]]
    lrt_ours, lrt_lme4 = ours[:, 0] - ours[:, 1], lme4[:, 0] - lme4[:, 1]
    return {
        "nsamp": nsamp,
        "max_abs_lrt_difference": float(np.max(np.abs(lrt_ours - lrt_lme4))),
        "max_deviance_above_lme4": [float(np.max(ours[:, j] - lme4[:, j])) for j in range(2)],
        "max_deviance_below_lme4": [float(np.max(lme4[:, j] - ours[:, j])) for j in range(2)],
    }


def main() -> None:
    code = code_version()
    loads = {"start": load()}
    r = run_rscript("pbkrtest_pbmodcomp", str(NSAMP))
    loads["after_pbkrtest"] = load()
    sleep = jaxmm.dataset("sleepstudy")
    large = jaxmm.fit(LARGE, sleep)
    results = {}
    for name, formula in SMALL.items():
        small = jaxmm.fit(formula, sleep)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            test = jaxmm.pblrt(SEED, NSAMP, small, large, progress=False)
            times.append(time.perf_counter() - start)
        loads[f"after_jaxmm_{name}"] = load()
        ours = test.reference
        theirs = pd.read_csv(RESULTS / f"pbkrtest_{name}.csv")["lrt"].to_numpy()
        pbk = r[name]["pbmodcomp"]
        ks = sps.ks_2samp(ours, theirs)
        jq, rq = quantiles_with_error(ours), quantiles_with_error(theirs)
        results[name] = {
            "small": formula,
            "large": LARGE,
            "nsamp": NSAMP,
            "jaxmm": {
                "cold_s": times[0],
                "warm_s": times[1],
                "nused": test.nused,
                "nfailed": test.nfailed,
                "lrt": test.lrt,
                "df": test.df,
                "p_chisq": test.pvalue_chisq,
                "p_bootstrap": test.pvalue_bootstrap,
                "p_gamma": test.pvalue_gamma,
                "p_bartlett": test.pvalue_bartlett,
                "mean_positive": float(ours[ours > 0].mean()),
                "var_positive": float(ours[ours > 0].var(ddof=1)),
                "n_zero": int(np.sum(ours == 0.0)),
            },
            "pbkrtest": {
                "seconds": pbk["seconds_total"],
                "npos": pbk["npos"],
                "n_nonpositive": int(np.sum(theirs <= 0)),
                "lrt": pbk["lrt"],
                "p_chisq": pbk["p_chisq"],
                "p_pb": pbk["p_pb"],
                "p_gamma": pbk["p_gamma"],
                "p_bartlett": pbk["p_bartlett"],
                "mean_positive": pbk["mean"],
                "var_positive": pbk["var"],
            },
            "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "quantiles": [
                {
                    "q": a["q"],
                    "jaxmm": a["value"],
                    "jaxmm_mc_se": a["mc_se"],
                    "pbkrtest": b["value"],
                    "pbkrtest_mc_se": b["mc_se"],
                    "difference_in_se": (a["value"] - b["value"]) / np.hypot(a["mc_se"], b["mc_se"]),
                }
                for a, b in zip(jq, rq)
            ],
            "speedup_warm": pbk["seconds_total"] / times[1],
            "speedup_cold": pbk["seconds_total"] / times[0],
            "paired_with_lme4": paired_check(test, name, PAIRED),
        }
        print(f"\n{name}: {formula}  vs  {LARGE}")
        print(test)
        print(f"KS two-sample: D = {ks.statistic:.4f}, p = {ks.pvalue:.3f}")
        print(pd.DataFrame(results[name]["quantiles"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"same {PAIRED} responses refitted by lme4: {results[name]['paired_with_lme4']}")
        print(
            f"time: pbkrtest {pbk['seconds_total']:.1f} s, jaxmm cold {times[0]:.2f} s, warm {times[1]:.3f} s; "
            f"ratio warm {results[name]['speedup_warm']:.0f}x, cold {results[name]['speedup_cold']:.1f}x"
        )
    results["_meta"] = {**run_meta(loads, code), "pbkrtest": r["_meta"], "pbkrtest_wall_s": r["_wall_s"]}
    (RESULTS / "pblrt.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print("wrote bench/results/pblrt.json")


if __name__ == "__main__":
    main()
