"""jaxmm's parametric bootstrap against lme4's bootMer: are the replicate distributions the same?

Run from the repository root (10-25 minutes on a 2-core CPU with the defaults, almost all of it bootMer's;
run it under `nice`, bootMer occupies a core):

    PYTHONPATH=. python bench/bench_vs_bootmer.py [--lme4-nsim 10000] [--nsamp 10000] [--reuse-lme4]

Models (ML): dyestuff `yield ~ 1 + (1|batch)`, sleepstudy `reaction ~ 1 + days + (1 + days|subj)`.
lme4: `Rscript bench/lme4_bootmer.R <nsim>` (bootMer, use.u = FALSE, seed 42), run in a scratch
folder so that the timing benchmark's files (bench/results/lme4_bootmer*) are left alone; its
replicate tables are kept as bench/results/vs_bootmer_lme4_<model>.csv (`--reuse-lme4` reads
those instead of running R again). Its columns map to jaxmm's `samp.tbl`: deviance = obj, the
fixed effects = β1.., sigma = σ, the theta columns = θ1.. (both on the relative scale, lower
triangle column by column); σ_j and ρ are derived from θ and σ by jaxmm's own table code.
jaxmm: `jaxmm.parametricbootstrap(42, nsamp, m)` (different random numbers from R's, of course).

Per parameter: the two-sample Kolmogorov-Smirnov p-value (scipy.stats.ks_2samp), and the 2.5,
25, 50, 75, 97.5 % quantiles of each program with Monte Carlo standard errors from the
distribution-free order-statistic interval (the 95% interval for the q-quantile runs from order
statistic n q - 1.96 sqrt(n q (1 - q)) to n q + 1.96 sqrt(...); se = its length / 3.92), and
z = (jaxmm - lme4) / sqrt(se_jaxmm^2 + se_lme4^2). Singular replicates are counted two ways:
a diagonal θ exactly 0, and below 1e-4 (lme4's isSingular tolerance): lme4's optimiser stops near
the bound where jaxmm's polish sets θ to exactly 0.
Writes bench/results/vs_bootmer.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import FORMULAS, RESULTS, ROOT, code_version, load, run_meta
from bench_coverage import parameter_table

import jaxmm

CODE_VERSION = code_version()
SEED = 42
MODELS = ("dyestuff", "sleepstudy")
QUANTILES = (0.025, 0.25, 0.5, 0.75, 0.975)
Z95 = 1.959963984540054


def lme4_csv(name: str) -> Path:
    return RESULTS / f"vs_bootmer_lme4_{name}.csv"


def run_bootmer(nsim: int) -> dict:
    """bench/lme4_bootmer.R in a scratch folder (it writes to ./bench/results); keep its replicate tables."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "jaxmm").mkdir()
        (scratch / "jaxmm" / "data").symlink_to(ROOT / "jaxmm" / "data")
        (scratch / "bench" / "results").mkdir(parents=True)
        cmd = ["Rscript", str(ROOT / "bench" / "lme4_bootmer.R"), str(nsim)]
        print("running", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, cwd=scratch, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        summary = json.loads((scratch / "bench" / "results" / "lme4_bootmer.json").read_text())
        for name in MODELS:
            shutil.copyfile(scratch / "bench" / "results" / f"lme4_bootmer_{name}.csv", lme4_csv(name))
    summary["_wall_s"] = wall
    return summary


def lme4_table(m, name: str) -> tuple[pd.DataFrame, int]:
    """bootMer's replicates as samp.tbl columns, and how many replicates failed (NA rows, dropped)."""
    raw = pd.read_csv(lme4_csv(name))
    failed = int(raw.isna().any(axis=1).sum())
    raw = raw.dropna()
    beta_cols = list(m.coefnames)
    theta_cols = [c for c in raw.columns if c not in ("deviance", "sigma", *beta_cols)]
    assert len(theta_cols) == m.structure.ntheta, (theta_cols, m.structure.ntheta)
    tbl = parameter_table(m, raw["deviance"], raw[beta_cols].to_numpy(), raw["sigma"], raw[theta_cols].to_numpy())
    return tbl, failed


def quantiles_with_se(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The QUANTILES of x (numpy's default, as R's type 7) and their order-statistic standard errors."""
    x = np.sort(x)
    n = len(x)
    q = np.asarray(QUANTILES)
    half = Z95 * np.sqrt(n * q * (1 - q))
    lo = np.clip(np.floor(n * q - half).astype(int), 0, n - 1)
    hi = np.clip(np.ceil(n * q + half).astype(int), 0, n - 1)
    return np.quantile(x, q), (x[hi] - x[lo]) / (2 * Z95)


def singular_fraction(theta: np.ndarray, diag: np.ndarray, tol: float) -> float:
    return float(np.mean(np.any(theta[:, diag] <= tol, axis=1)))


def compare(name: str, nsamp: int) -> dict:
    m = jaxmm.fit(FORMULAS[name], jaxmm.dataset(name))
    start = time.perf_counter()
    samp = jaxmm.parametricbootstrap(SEED, nsamp, m, progress=False)
    seconds = time.perf_counter() - start
    ours = samp.tbl
    theirs, failed = lme4_table(m, name)
    diag = m.lowerbd == 0.0
    theta_cols = [c for c in ours.columns if c.startswith("θ")]
    rows = []
    for par in ours.columns:
        a, b = ours[par].to_numpy(np.float64), theirs[par].to_numpy(np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]  # ρ is undefined where a σ_j is 0
        qa, sa = quantiles_with_se(a)
        qb, sb = quantiles_with_se(b)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (qa - qb) / np.sqrt(sa**2 + sb**2)
        rows.append(
            {
                "parameter": par,
                "n_jaxmm": len(a),
                "n_lme4": len(b),
                "ks_statistic": float(sps.ks_2samp(a, b).statistic),
                "ks_pvalue": float(sps.ks_2samp(a, b).pvalue),
                "quantiles": list(QUANTILES),
                "jaxmm_quantiles": qa.tolist(),
                "jaxmm_quantile_se": sa.tolist(),
                "lme4_quantiles": qb.tolist(),
                "lme4_quantile_se": sb.tolist(),
                # 0/0 (both quantiles on a point mass such as σ_j = 0) is agreement, not a number
                "z": [0.0 if np.isnan(v) and qa[i] == qb[i] else float(v) for i, v in enumerate(z)],
            }
        )
    ours_theta, theirs_theta = ours[theta_cols].to_numpy(), theirs[theta_cols].to_numpy()
    return {
        "formula": FORMULAS[name],
        "nsamp_jaxmm": nsamp,
        "nsim_lme4": len(theirs) + failed,
        "lme4_failed_replicates": failed,
        "jaxmm_seconds": seconds,
        "jaxmm_unconverged": int((~samp.converged).sum()),
        "singular_theta_eq_0": {
            "jaxmm": singular_fraction(ours_theta, diag, 0.0),
            "lme4": singular_fraction(theirs_theta, diag, 0.0),
        },
        "singular_theta_le_1e-4": {
            "jaxmm": singular_fraction(ours_theta, diag, 1e-4),
            "lme4": singular_fraction(theirs_theta, diag, 1e-4),
        },
        "parameters": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lme4-nsim", type=int, default=10_000, help="bootMer replicates per model (default 10,000)")
    ap.add_argument("--nsamp", type=int, default=10_000, help="jaxmm replicates per model (default 10,000)")
    ap.add_argument(
        "--reuse-lme4", action="store_true", help="read bench/results/vs_bootmer_lme4_*.csv instead of running R"
    )
    ap.add_argument("--out", default=str(RESULTS / "vs_bootmer.json"))
    args = ap.parse_args()

    loads = {"lme4": load()}
    lme4 = None if args.reuse_lme4 else run_bootmer(args.lme4_nsim)
    results = {}
    for name in MODELS:
        loads[f"jaxmm {name}"] = load()
        results[name] = compare(name, args.nsamp)
    loads["end"] = load()
    out = {
        "seed": SEED,
        "models": results,
        "lme4_run": None
        if lme4 is None
        else {
            "wall_s": lme4["_wall_s"],
            "meta": lme4["_meta"],
            "seconds_per_replicate": {name: lme4[name]["seconds_per_replicate"] for name in MODELS},
        },
        "meta": run_meta(loads, CODE_VERSION),
    }
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))

    print("\n| model | parameter | KS p | quantile | jaxmm (± se) | lme4 (± se) | z |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        for row in r["parameters"]:
            for i, q in enumerate(QUANTILES):
                head = f"| {name} | {row['parameter']} | {row['ks_pvalue']:.3f} " if i == 0 else "| | | "
                print(
                    f"{head}| {100 * q:g}% | {row['jaxmm_quantiles'][i]:.4g} ± {row['jaxmm_quantile_se'][i]:.2g} | "
                    f"{row['lme4_quantiles'][i]:.4g} ± {row['lme4_quantile_se'][i]:.2g} | {row['z'][i]:+.2f} |"
                )
    for name, r in results.items():
        print(
            f"\n{name}: jaxmm {r['nsamp_jaxmm']} replicates ({r['jaxmm_seconds']:.1f} s, "
            f"unconverged {r['jaxmm_unconverged']}), "
            f"lme4 {r['nsim_lme4']} ({r['lme4_failed_replicates']} failed); singular (θ = 0): "
            f"jaxmm {r['singular_theta_eq_0']['jaxmm']:.4f}, lme4 {r['singular_theta_eq_0']['lme4']:.4f}; "
            f"(θ ≤ 1e-4): jaxmm {r['singular_theta_le_1e-4']['jaxmm']:.4f}, "
            f"lme4 {r['singular_theta_le_1e-4']['lme4']:.4f}"
        )
    print(f"jaxmm code: {CODE_VERSION}\nwrote {args.out}")


if __name__ == "__main__":
    main()
