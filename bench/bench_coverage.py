"""Coverage of the parametric bootstrap's 95% intervals, by simulation from known parameters.

Run from the repository root (about 10-15 minutes on a 2-core CPU with the defaults):

    PYTHONPATH=. python bench/bench_coverage.py [--datasets 2000] [--nboot 1000] [--seed 20261126]

For each design, the truth is the ML fit of the real data set (dyestuff `yield ~ 1 + (1|batch)`,
6 batches x 5; sleepstudy `reaction ~ 1 + days + (1 + days|subj)`, 18 subjects x 10 days).
Data set i is the real data frame with its response replaced by a draw from the fitted model
(`jaxmm.lmm.simulate_response`, key fold_in(key(seed), i)); it is fitted with `jaxmm.fit`
and bootstrapped with `jaxmm.parametricbootstrap(seed + 1 + i, nboot, m_i)`, whose shortest and
equal-tail 95% intervals (`samp.confint`) are checked against the true β, σ (residual), σ_j
and ρ. Coverage is the fraction of data sets whose interval holds the true value, with its
binomial standard error sqrt(p (1 - p) / N).

Every data set has the design of the real one, so the fit and the bootstrap reuse the code
compiled for the first data set: the script records which later data sets still compiled
something (XLA compilations, from jax.monitoring). Expected: the first fit with a diagonal θ
below 0.1 compiles one more function (its bootstrap starts off the boundary, at θ = 0.1, with a
Hessian computed there rather than the fit's own).
Writes bench/results/coverage.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import FORMULAS, RESULTS, code_version, load, run_meta

import jaxmm
from jaxmm.bootstrap import simulated_responses
from jaxmm.results import MixedModelBootstrap, Replicates

CODE_VERSION = code_version()
LEVEL = 0.95
DESIGNS = ("dyestuff", "sleepstudy")

_compiles = [0]
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _secs, **_kw: _compiles.__setitem__(
        0, _compiles[0] + (event == "/jax/core/compile/backend_compile_duration")
    )
)


def parameter_table(m, objective, beta, sigma, theta) -> pd.DataFrame:
    """samp.tbl's columns (obj, β.., σ, σ.., ρ.., θ..) for given fits of model m, one row each.

    Uses jaxmm's own bootstrap table, so a true value or another program's replicates get their
    σ_j and ρ from θ and σ exactly as jaxmm's replicates do."""
    n = len(objective)
    est = m.design.estimable
    full_beta = np.full((n, len(est)), -0.0)
    full_beta[:, est] = np.asarray(beta, dtype=np.float64).reshape(n, -1)
    reps = Replicates(
        objective=np.asarray(objective, dtype=np.float64),
        beta=full_beta,
        se=np.full_like(full_beta, np.nan),
        sigma=np.asarray(sigma, dtype=np.float64),
        theta=np.asarray(theta, dtype=np.float64).reshape(n, -1),
        converged=np.ones(n, dtype=bool),
        niter=np.zeros(n, dtype=np.int64),
    )
    return MixedModelBootstrap(m, reps).tbl


def coverage_of_design(name: str, datasets: int, nboot: int, seed: int) -> dict:
    formula, data = FORMULAS[name], jaxmm.dataset(name)
    truth_model = jaxmm.fit(formula, data)
    truth = parameter_table(
        truth_model,
        [truth_model.objective],
        truth_model.beta.to_numpy()[truth_model.design.estimable],
        [truth_model.sigma],
        truth_model.theta,
    ).iloc[0]
    params = [c for c in truth.index if c != "obj" and not c.startswith("θ")]
    ys = simulated_responses(truth_model, seed, datasets)
    response = truth_model.design.response

    intervals = {method: {p: np.empty((datasets, 2)) for p in params} for method in ("shortest", "equaltail")}
    estimates = {p: np.empty(datasets) for p in params}
    singular_fit = np.zeros(datasets, dtype=bool)
    min_diag_theta = np.empty(datasets)
    unconverged_fits, unconverged_replicates, singular_replicates = 0, 0, 0
    seconds = np.empty(datasets)
    compiled_in = []  # data sets (after the first) whose fit or bootstrap compiled something
    for i, y in enumerate(ys):
        start = time.perf_counter()
        compiles_before = _compiles[0]
        df = data.copy()
        df[response] = y
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = jaxmm.fit(formula, df)
            samp = jaxmm.parametricbootstrap(seed + 1 + i, nboot, m, progress=False)
        unconverged_fits += not m.optsum.converged
        unconverged_replicates += int((~samp.converged).sum())
        singular_replicates += int(samp.issingular().sum())
        singular_fit[i] = m.issingular()
        min_diag_theta[i] = m.theta[m.lowerbd == 0.0].min()
        est = parameter_table(m, [m.objective], m.beta.to_numpy()[m.design.estimable], [m.sigma], m.theta).iloc[0]
        for p in params:
            estimates[p][i] = est[p]
        for method in intervals:
            ci = samp.confint(LEVEL, method=method).set_index("par")
            for p in params:
                intervals[method][p][i] = ci.loc[p, ["lower", "upper"]].to_numpy(dtype=np.float64)
        seconds[i] = time.perf_counter() - start
        if i > 0 and _compiles[0] > compiles_before:
            compiled_in.append(i)
        if caught and i == 0:
            print("  warnings on the first data set:", [str(w.message) for w in caught], flush=True)
        if (i + 1) % max(1, datasets // 10) == 0:
            print(f"  {name}: {i + 1}/{datasets} data sets, {seconds[: i + 1].sum():.0f} s", flush=True)

    table = []
    for p in params:
        row = {"parameter": p, "truth": float(truth[p])}
        for method, ivs in intervals.items():
            lo, hi = ivs[p][:, 0], ivs[p][:, 1]
            covered = (lo <= truth[p]) & (truth[p] <= hi)
            cover = covered.mean()
            row[method] = {
                "coverage": float(cover),
                "se": float(np.sqrt(cover * (1 - cover) / datasets)),
                "below": float(np.mean(hi < truth[p])),  # the interval lies below the truth
                "above": float(np.mean(lo > truth[p])),
                "median_width": float(np.median(hi - lo)),
                "coverage_when_fit_singular": float(covered[singular_fit].mean()) if singular_fit.any() else None,
            }
        table.append(row)
    return {
        "formula": formula,
        "datasets": datasets,
        "nboot": nboot,
        "truth": {p: float(truth[p]) for p in truth.index if p != "obj"},
        "coverage": table,
        "singular_fits": int(singular_fit.sum()),
        "unconverged_fits": unconverged_fits,
        "unconverged_replicates": unconverged_replicates,
        "singular_replicates": singular_replicates,
        "seconds_total": float(seconds.sum()),
        "seconds_first_dataset": float(seconds[0]),
        "seconds_median_dataset": float(np.median(seconds)),
        "datasets_that_compiled_after_the_first": compiled_in,
        "their_smallest_diagonal_theta": [float(min_diag_theta[i]) for i in compiled_in],
        "per_dataset": {
            "estimate": {p: v.tolist() for p, v in estimates.items()},
            "singular_fit": singular_fit.tolist(),
            **{f"{method}_interval": {p: v.tolist() for p, v in ivs.items()} for method, ivs in intervals.items()},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=int, default=2000, help="simulated data sets per design (default 2000)")
    ap.add_argument("--nboot", type=int, default=1000, help="bootstrap replicates per data set (default 1000)")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    ap.add_argument("--out", default=str(RESULTS / "coverage.json"))
    args = ap.parse_args()

    loads, results = {}, {}
    for name in args.designs:
        loads[name] = load()
        print(f"{name}: {args.datasets} data sets x {args.nboot} replicates ...", flush=True)
        results[name] = coverage_of_design(name, args.datasets, args.nboot, args.seed)
    loads["end"] = load()
    out = {"level": LEVEL, "seed": args.seed, "designs": results, "meta": run_meta(loads, CODE_VERSION)}
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))

    print(
        "\n| design | parameter | truth | shortest: coverage ± se | equal-tail: coverage ± se | "
        "shortest: truth below / above interval | median width (shortest) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        for row in r["coverage"]:
            s, e = row["shortest"], row["equaltail"]
            print(
                f"| {name} | {row['parameter']} | {row['truth']:.4g} | {s['coverage']:.3f} ± {s['se']:.3f} | "
                f"{e['coverage']:.3f} ± {e['se']:.3f} | {s['above']:.3f} / {s['below']:.3f} | {s['median_width']:.4g} |"
            )
    for name, r in results.items():
        print(
            f"\n{name}: {r['datasets']} data sets x {r['nboot']} replicates in {r['seconds_total']:.0f} s "
            f"(first data set {r['seconds_first_dataset']:.1f} s, median {r['seconds_median_dataset']:.3f} s); "
            f"data sets after the first that compiled: {r['datasets_that_compiled_after_the_first']} "
            f"(their smallest diagonal θ: {r['their_smallest_diagonal_theta']}); "
            f"singular fits {r['singular_fits']}, unconverged fits {r['unconverged_fits']}, "
            f"unconverged replicates {r['unconverged_replicates']}, singular replicates {r['singular_replicates']}"
        )
    print(f"jaxmm code: {CODE_VERSION}\nwrote {args.out}")


if __name__ == "__main__":
    main()
