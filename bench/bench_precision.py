"""What precision="float32" costs in accuracy, and gains in time, against float64 fits.

    PYTHONPATH=. python bench/bench_precision.py [--nsamp 10000] [--models sleepstudy dyestuff]

Per model, parametricbootstrap(1, nsamp, m) is run with precision="float64" and "float32"
(each twice: the first run compiles, the second is timed). Both fit the same simulated responses
(they are drawn in float64 either way), so replicate i can be compared directly. The float32
fit's theta is put back into the float64 profiled deviance of its own response, and compared
with the float64 fit's objective:

    excess = f64(theta_float32) - f64(theta_float64),  relative to f64(theta_float64)

which is what the float32 fit loses as an optimum (the audit's tolerance is 1e-6 relative); the
objective float32 reports is compared with f64(theta_float32) (its own rounding). Also the
largest differences of beta, sigma and the sigma_k, and the singular counts. Runs on whatever
device JAX sees. Writes bench/results/precision_<platform>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import FORMULAS, RESULTS, code_version, load, run_meta

import jaxmm
from jaxmm.bootstrap import simulated_responses
from jaxmm.design import suffstats
from jaxmm.deviance import objective

CODE_VERSION = code_version()


def float64_objectives(m, responses: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """The float64 profiled deviance of each response at its theta."""
    with jax.enable_x64(True):
        mats, blocks = (jax.tree.map(jnp.asarray, a) for a in (m.design.matrices, m.design.blocks))
        one = lambda y, th: objective(th, blocks, suffstats(mats, m.structure, y), structure=m.structure, reml=m.REML)
        return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(responses), jnp.asarray(thetas, dtype=jnp.float64)))


def compare(name: str, nsamp: int) -> dict:
    m = jaxmm.fit(FORMULAS[name], jaxmm.dataset(name))
    runs = {}
    for precision in ("float64", "float32"):
        jaxmm.parametricbootstrap(1, nsamp, m, progress=False, precision=precision)
        t = time.perf_counter()
        runs[precision] = (
            jaxmm.parametricbootstrap(1, nsamp, m, progress=False, precision=precision),
            time.perf_counter() - t,
        )
    (b64, t64), (b32, t32) = runs["float64"], runs["float32"]
    responses = simulated_responses(m, 1, nsamp)
    at32 = float64_objectives(m, responses, b32.theta)
    rel = (at32 - b64.objective) / np.abs(b64.objective)
    t64_tbl, t32_tbl = b64.tbl, b32.tbl
    columns = [c for c in t64_tbl.columns if c.startswith(("β", "σ"))]
    return {
        "model": name,
        "nsamp": nsamp,
        "float64_s": t64,
        "float32_s": t32,
        "speedup": t64 / t32,
        "excess_rel_quantiles_50_99_999_max": np.quantile(rel, [0.5, 0.99, 0.999, 1.0]).tolist(),
        "excess_over_1e-6": int((rel > 1e-6).sum()),
        "excess_over_1e-5": int((rel > 1e-5).sum()),
        "excess_over_1e-4": int((rel > 1e-4).sum()),
        "reported_objective_error_max_rel": float(np.max(np.abs(b32.objective - at32) / np.abs(at32))),
        "max_abs_difference": {c: float(np.nanmax(np.abs(t64_tbl[c] - t32_tbl[c]))) for c in columns},
        "median_abs_difference": {c: float(np.nanmedian(np.abs(t64_tbl[c] - t32_tbl[c]))) for c in columns},
        "unconverged_float64": int((~b64.converged).sum()),
        "unconverged_float32": int((~b32.converged).sum()),
        "singular_float64": int(b64.issingular().sum()),
        "singular_float32": int(b32.issingular().sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsamp", type=int, default=10_000)
    ap.add_argument("--models", nargs="+", default=["sleepstudy", "dyestuff", "penicillin"], choices=list(FORMULAS))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    loads, rows = {}, []
    for name in args.models:
        loads[name] = load()
        rows.append(compare(name, args.nsamp))
        print(json.dumps(rows[-1]), flush=True)
    platform = jax.devices()[0].platform
    out = {"meta": run_meta(loads, CODE_VERSION), "device": str(jax.devices()[0].device_kind), "runs": rows}
    (RESULTS / f"precision_{platform}.json").write_text(json.dumps(out, indent=1))
    print(
        "| model | float64 s | float32 s | speed-up | excess > 1e-6 | > 1e-4 | max excess (rel) | singular f64 / f32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['float64_s']:.2f} | {r['float32_s']:.2f} | {r['speedup']:.2f}x "
            f"| {r['excess_over_1e-6']} | {r['excess_over_1e-4']} | {r['excess_rel_quantiles_50_99_999_max'][-1]:.1e} "
            f"| {r['singular_float64']} / {r['singular_float32']} |"
        )


if __name__ == "__main__":
    main()
