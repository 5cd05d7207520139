"""The first answer: one whole fit (construction + fit, ML) of small LMMs, warm, side by side with
lme4's lmer and lme-python's lmer.

    PYTHONPATH=. python bench/bench_warm_fit.py                      # ~2 min on 2 cores
    PYTHONPATH=. python bench/bench_warm_fit.py --lmepy /path/to/python   # lme-python's interpreter
    PYTHONPATH=. python bench/bench_warm_fit.py --jaxmm-only         # only jaxmm (compare two commits)

"Warm": compiled code reused, as in a session that has fitted a model of that shape once. Per model
and program, one untimed call, then the median (and range) of `REPEATS` timed calls:

  jaxmm       jaxmm.fit(formula, df, REML=False), and its two parts: LinearMixedModel(formula, df)
              (construction) and m.fit(REML=False) on a constructed model
  lme4        lmer(formula, data, REML = FALSE) (bench/lme4_warm_fits.R: batches of 5 calls)
  lme-python  lme_python.lmer(formula, df, reml=False), in its own interpreter (--lmepy; skipped
              where it is not installed, and for models it cannot express: n/a)

Every program fits the same data frame (written to a temporary folder as CSV, categorical columns
as factors in R and categoricals in lme-python), and its objective is recorded to check that
the models agree. The three run one after another in this one script, os.getloadavg() recorded
before each. Writes bench/results/warm_fit_times.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, ROOT, code_version, load, run_meta

import jaxmm

CODE_VERSION = code_version()
REPEATS = 30

# name: (data set, formula, lme-python can express it); sleepstudy's days2 = days^2
MODELS = {
    "dyestuff": ("dyestuff", "yield ~ 1 + (1|batch)", True),
    "dyestuff2": ("dyestuff2", "yield ~ 1 + (1|batch)", True),
    "sleepstudy": ("sleepstudy", "reaction ~ 1 + days + (1 + days|subj)", True),
    "sleepstudy_diag": ("sleepstudy", "reaction ~ 1 + days + (1|subj) + (0 + days|subj)", True),
    "sleepstudy_quad": ("sleepstudy", "reaction ~ 1 + days + days2 + (1 + days + days2|subj)", False),
    "penicillin": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", True),
    "pastes": ("pastes", "strength ~ 1 + (1|batch/cask)", True),
    "cake": ("cake", "angle ~ recipe * temperature + (1|recipe:replicate)", True),
    "cake_crossed": ("cake", "angle ~ 1 + temp + (1|replicate) + (1|recipe:replicate)", True),
}

_LMEPY = """
import json, sys, time, statistics
import pandas as pd
import lme_python as lp
spec, out = json.load(open(sys.argv[1])), {}
for name, s in spec.items():
    df = pd.read_csv(s["csv"])
    for c in s["factors"]:
        df[c] = df[c].astype(str).astype("category")
    try:
        r = lp.lmer(s["formula"], df, reml=False)
    except Exception as err:
        out[name] = {"error": f"{type(err).__name__}: {err}"[:200]}
        continue
    times = []
    for _ in range(s["repeats"]):
        t = time.perf_counter()
        r = lp.lmer(s["formula"], df, reml=False)
        times.append(time.perf_counter() - t)
    dev = r.deviance() if callable(r.deviance) else r.deviance
    out[name] = {"times": times, "median": statistics.median(times), "min": min(times), "max": max(times),
                 "deviance": float(dev)}
json.dump(out, open(sys.argv[2], "w"))
"""


def frame(data: str):
    df = jaxmm.dataset(data)
    return df.assign(days2=df["days"] ** 2) if data == "sleepstudy" else df


def timed(call, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "times": times}


def time_jaxmm(data: str, formula: str, repeats: int) -> dict:
    df = frame(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = jaxmm.fit(formula, df, REML=False)  # compiles
        whole = timed(lambda: jaxmm.fit(formula, df, REML=False), repeats)
        construct = timed(lambda: jaxmm.LinearMixedModel(formula, df), repeats)
        m = jaxmm.LinearMixedModel(formula, df)
        fit = timed(lambda: m.fit(REML=False), repeats)
    return {
        "total": summary(whole),
        "construct": summary(construct),
        "fit": summary(fit),
        "first_compile_s": first.optsum.compile_s,
        "objective": m.objective,
    }


def write_spec(folder: Path, names: list[str], lmepy_only: bool) -> Path:
    """The models' data frames as CSV in `folder` and the spec the R and lme-python runners read."""
    spec = {}
    for name in names:
        data, formula, expressible = MODELS[name]
        if lmepy_only and not expressible:
            continue
        df = frame(data)
        path = folder / f"{data}.csv"
        df.to_csv(path, index=False)
        factors = [c for c in df.columns if str(df[c].dtype) == "category"]
        spec[name] = {"csv": str(path), "formula": formula, "factors": factors, "repeats": REPEATS}
    path = folder / ("spec_lmepy.json" if lmepy_only else "spec.json")
    path.write_text(json.dumps(spec, indent=1))
    return path


def run(cmd: list[str], out: Path) -> dict:
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def ms(x) -> str:
    return "n/a" if x is None else f"{1e3 * x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lmepy", default="/tmp/lmepy/bin/python", help="the Python interpreter with lme_python")
    ap.add_argument("--jaxmm-only", action="store_true", help="skip lme4 and lme-python")
    args = ap.parse_args()
    names = list(MODELS)
    RESULTS.mkdir(parents=True, exist_ok=True)
    loads, jres = {}, {}
    for name in names:
        data, formula, _ = MODELS[name]
        loads[f"jaxmm {name}"] = load()
        jres[name] = time_jaxmm(data, formula, REPEATS)
        r = jres[name]
        print(
            f"jaxmm {name}: total {ms(r['total']['median'])} ms (construct {ms(r['construct']['median'])}, "
            f"fit {ms(r['fit']['median'])}), first compile {r['first_compile_s']:.2f} s",
            flush=True,
        )
    lres, pres = {}, {}
    if not args.jaxmm_only:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            loads["lme4"] = load()
            out = RESULTS / "lme4_warm_fits.json"
            lres = run(["Rscript", "bench/lme4_warm_fits.R", str(write_spec(folder, names, False)), str(out)], out)
            loads["lme-python"] = load()
            if Path(args.lmepy).exists():
                script, out = folder / "lmepy_runner.py", RESULTS / "lmepy_warm_fits.json"
                script.write_text(_LMEPY)
                pres = run([args.lmepy, str(script), str(write_spec(folder, names, True)), str(out)], out)
    loads["end"] = load()

    rows = []
    for name in names:
        j, r4, p = jres[name], lres.get(name, {}), pres.get(name, {})
        total = j["total"]["median"]
        rows.append(
            {
                "model": name,
                "formula": MODELS[name][1],
                "jaxmm_total_s": total,
                "jaxmm_total_range_s": [j["total"]["min"], j["total"]["max"]],
                "jaxmm_construct_s": j["construct"]["median"],
                "jaxmm_fit_s": j["fit"]["median"],
                "lme4_s": r4.get("median"),
                "lmepy_s": p.get("median"),
                "lme4_over_jaxmm": r4["median"] / total if "median" in r4 else None,
                "jaxmm_over_lmepy": total / p["median"] if "median" in p else None,
                "objective_jaxmm": j["objective"],
                "objective_lme4": r4.get("deviance"),
                "objective_lmepy": p.get("deviance"),
            }
        )
    result = {
        "rows": rows,
        "jaxmm": jres,
        "lme4": lres,
        "lmepy": pres,
        "meta": {
            "what": f"seconds per whole ML fit, warm: median of {REPEATS} calls after an untimed one",
            **run_meta(loads, CODE_VERSION),
        },
    }
    (RESULTS / ("warm_fit_times_jaxmm.json" if args.jaxmm_only else "warm_fit_times.json")).write_text(
        json.dumps(result, indent=2, default=float)
    )

    print()
    print(
        "| model | jaxmm construct (ms) | jaxmm fit (ms) | jaxmm total (ms) [range] | lme4 (ms) | lme-python (ms) "
        "| lme4 / jaxmm | jaxmm / lme-python | objective jaxmm − lme4 | − lme-python |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lo, hi = r["jaxmm_total_range_s"]
        l4 = "n/a" if r["lme4_over_jaxmm"] is None else f"{r['lme4_over_jaxmm']:.1f}"
        lp = "n/a" if r["jaxmm_over_lmepy"] is None else f"{r['jaxmm_over_lmepy']:.1f}"
        d4 = "n/a" if r["objective_lme4"] is None else f"{r['objective_jaxmm'] - r['objective_lme4']:.1e}"
        dp = "n/a" if r["objective_lmepy"] is None else f"{r['objective_jaxmm'] - r['objective_lmepy']:.1e}"
        print(
            f"| {r['model']} | {ms(r['jaxmm_construct_s'])} | {ms(r['jaxmm_fit_s'])} | "
            f"{ms(r['jaxmm_total_s'])} [{ms(lo)}-{ms(hi)}] | {ms(r['lme4_s'])} | {ms(r['lmepy_s'])} | "
            f"{l4} | {lp} | {d4} | {dp} |"
        )
    print(f"\nloadavg before each phase: {loads}")
    print(f"jaxmm code: {CODE_VERSION}")


if __name__ == "__main__":
    main()
