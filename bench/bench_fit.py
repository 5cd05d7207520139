"""Single-fit timing: jaxmm (first fit with JIT compile, and steady state) vs lme4 vs statsmodels.

Run from the repository root (takes several minutes; lme4 needs ~45 s per insteval fit):

    PYTHONPATH=. python bench/bench_fit.py                   # all four models
    PYTHONPATH=. python bench/bench_fit.py --skip-insteval   # the three small ones only

All three programs run from this one script, one after another, so that their timings come
from the same stretch of machine load (os.getloadavg() is recorded before each phase).
lme4 runs as `Rscript bench/lme4_fit_times.R <model>=<N> ...` (bench/results/lme4_fit_times.json).
Writes bench/results/fit_times.json and prints a markdown table.

jaxmm timings (all ML, REML=False):
  construct   LinearMixedModel(formula, df): parsing, design, cross-products (median over repeats
              after the first)
  first fit   the first m.fit() for this model in the process (JIT compile + solve)
  steady      median of the following m.fit() calls on the same object (compiled code reused)
  compile     first fit - steady (and optsum_compile_s: m.optsum.compile_s of the first fit, JAX's timers)
lme4's time is a whole lmer() call (model construction + fit), so "jaxmm construct+steady" is the
like-for-like figure; "ratio" columns use the steady m.fit() time as asked and the table shows both.
bench/bench_warm_fit.py times that whole call (construction + fit, warm) for more small models, beside
lme4 and lme-python.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import FORMULAS, RESULTS, code_version, load, run_meta, run_rscript

import jaxmm

CODE_VERSION = code_version()

REPEATS = {"dyestuff": 10, "sleepstudy": 10, "penicillin": 10, "insteval": 2}  # timed fits, jaxmm and lme4
STATSMODELS_REPEATS = 10


def time_jaxmm(name: str, formula: str, repeats: int) -> dict:
    df = jaxmm.dataset(name)
    caught = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        m = jaxmm.LinearMixedModel(formula, df)
        t1 = time.perf_counter()
        m.fit(REML=False)
        t2 = time.perf_counter()
        compile_measured = m.optsum.compile_s  # JAX's own timers, before the steady fits overwrite optsum
        steady = []
        for _ in range(repeats):
            s = time.perf_counter()
            m.fit(REML=False)
            steady.append(time.perf_counter() - s)
        construct = []
        for _ in range(min(repeats, 5)):
            s = time.perf_counter()
            jaxmm.LinearMixedModel(formula, df)
            construct.append(time.perf_counter() - s)
        caught = [str(x.message) for x in w]
    steady_med = statistics.median(steady)
    construct_med = statistics.median(construct)
    return {
        "formula": formula,
        "first_construct_s": t1 - t0,
        "first_fit_s": t2 - t1,
        "first_total_s": t2 - t0,
        "steady_fit_s": steady_med,
        "steady_fit_times_s": steady,
        "construct_s": construct_med,
        "construct_plus_steady_s": construct_med + steady_med,
        "compile_s": (t2 - t1) - steady_med,
        "optsum_compile_s": compile_measured,
        "repeats": repeats,
        "objective": m.objective,
        "converged": bool(m.optsum.converged),
        "niter": int(m.optsum.niter),
        "warnings": caught,
    }


def statsmodels_specs():
    import statsmodels.formula.api as smf

    d = jaxmm.dataset("dyestuff")
    s = jaxmm.dataset("sleepstudy")
    p = jaxmm.dataset("penicillin").assign(_one=1)
    # `yield` is a Python keyword, hence Q("yield") in patsy.
    return {
        "dyestuff": (
            "mixedlm('Q(\"yield\") ~ 1', groups=batch)",
            lambda: smf.mixedlm('Q("yield") ~ 1', d, groups=d["batch"]).fit(reml=False),
        ),
        "sleepstudy": (
            "mixedlm('reaction ~ 1 + days', groups=subj, re_formula='~days')",
            lambda: smf.mixedlm("reaction ~ 1 + days", s, groups=s["subj"], re_formula="~days").fit(reml=False),
        ),
        "penicillin": (
            "mixedlm('diameter ~ 1', groups=<constant>, re_formula='0', "
            "vc_formula={plate: '0 + C(plate)', sample: '0 + C(sample)'})",
            lambda: smf.mixedlm(
                "diameter ~ 1",
                p,
                groups=p["_one"],
                re_formula="0",
                vc_formula={"plate": "0 + C(plate)", "sample": "0 + C(sample)"},
            ).fit(reml=False),
        ),
    }


def time_statsmodels(name: str) -> dict:
    specs = statsmodels_specs()
    if name not in specs:
        return {
            "skipped": "too large for statsmodels MixedLM (crossed factors with ~4,100 levels "
            "would need dense variance-component design matrices)"
        }
    call, fn = specs[name]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()  # warm-up (imports, patsy caches)
        times = []
        for _ in range(STATSMODELS_REPEATS):
            s = time.perf_counter()
            r = fn()
            times.append(time.perf_counter() - s)
        caught = sorted({str(x.message)[:200] for x in w})
    return {
        "call": call + ".fit(reml=False)",
        "median_s": statistics.median(times),
        "times_s": times,
        "objective": float(-2 * r.llf),
        "converged": bool(r.converged),
        "warnings": caught,
    }


def run_lme4(names: list[str]) -> dict:
    return run_rscript("lme4_fit_times", *(f"{n}={REPEATS[n]}" for n in names))


def fmt(x, digits=4):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:.2f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None else a / b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-insteval", action="store_true", help="only the three small models")
    ap.add_argument("--insteval-repeats", type=int, default=REPEATS["insteval"], help="steady jaxmm insteval fits")
    args = ap.parse_args()

    names = [n for n in REPEATS if not (args.skip_insteval and n == "insteval")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    loads = {}

    jres = {}
    for n in names:
        reps = args.insteval_repeats if n == "insteval" else REPEATS[n]
        loads[f"jaxmm {n}"] = load()
        print(f"jaxmm {n} ...", flush=True)
        jres[n] = time_jaxmm(n, FORMULAS[n], reps)
        r = jres[n]
        print(
            f"  first fit {r['first_fit_s']:.3f} s, steady {r['steady_fit_s']:.4f} s, objective {r['objective']:.6f}",
            flush=True,
        )

    sres = {}
    for n in names:
        loads[f"statsmodels {n}"] = load()
        print(f"statsmodels {n} ...", flush=True)
        sres[n] = time_statsmodels(n)

    loads["lme4"] = load()
    lres = run_lme4(names)
    loads["end"] = load()

    rows = []
    for n in names:
        j, s = jres[n], sres[n]
        l_t = lres.get(n)
        l_dev = lres["_details"][n]["deviance"]
        s_t = s.get("median_s")
        rows.append(
            {
                "model": n,
                "formula": FORMULAS[n],
                "jaxmm_steady_s": j["steady_fit_s"],
                "jaxmm_construct_plus_steady_s": j["construct_plus_steady_s"],
                "jaxmm_first_fit_s": j["first_fit_s"],
                "jaxmm_compile_s": j["compile_s"],
                "lme4_s": l_t,
                "statsmodels_s": s_t,
                "ratio_lme4_over_jaxmm": ratio(l_t, j["steady_fit_s"]),
                "ratio_lme4_over_jaxmm_construct_plus_fit": ratio(l_t, j["construct_plus_steady_s"]),
                "ratio_statsmodels_over_jaxmm": ratio(s_t, j["steady_fit_s"]),
                "objective_jaxmm": j["objective"],
                "objective_lme4": l_dev,
                "objective_statsmodels": s.get("objective"),
            }
        )

    out = {
        "rows": rows,
        "jaxmm": jres,
        "lme4": lres,
        "statsmodels": sres,
        "meta": {
            "what": "seconds per ML fit; jaxmm steady = median m.fit() on a constructed model; "
            "lme4 = median lmer() call; statsmodels = median MixedLM(...).fit(reml=False)",
            **run_meta(loads, CODE_VERSION),
        },
    }
    (RESULTS / "fit_times.json").write_text(json.dumps(out, indent=2, default=float))

    print()
    print(
        "| model | jaxmm steady (s) | jaxmm construct+steady (s) | jaxmm compile (s) | lme4 (s) | "
        "statsmodels (s) | lme4/jaxmm | lme4/jaxmm (construct+fit) | statsmodels/jaxmm | "
        "objective jaxmm | objective lme4 | objective statsmodels | jaxmm − lme4 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        sm = "n/a (too large)" if r["statsmodels_s"] is None else fmt(r["statsmodels_s"])
        print(
            f"| {r['model']} | {fmt(r['jaxmm_steady_s'])} | {fmt(r['jaxmm_construct_plus_steady_s'])} | "
            f"{fmt(r['jaxmm_compile_s'], 2)} | {fmt(r['lme4_s'])} | {sm} | "
            f"{fmt(r['ratio_lme4_over_jaxmm'], 2)} | {fmt(r['ratio_lme4_over_jaxmm_construct_plus_fit'], 2)} | "
            f"{fmt(r['ratio_statsmodels_over_jaxmm'], 2)} | "
            f"{r['objective_jaxmm']:.6f} | {r['objective_lme4']:.6f} | "
            f"{'–' if r['objective_statsmodels'] is None else format(r['objective_statsmodels'], '.6f')} | "
            f"{r['objective_jaxmm'] - r['objective_lme4']:.1e} |"
        )
    print(f"\nloadavg before each phase: {loads}")
    print(f"jaxmm code: {CODE_VERSION}")
    print("wrote bench/results/fit_times.json")


if __name__ == "__main__":
    main()
