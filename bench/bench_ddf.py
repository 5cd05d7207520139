"""Satterthwaite and Kenward-Roger tables (jaxmm.ddf, derivatives by autodiff) beside lmerTest and
pbkrtest (numerical derivatives; bench/ddf_lmertest.R) and lme-python (if installed in its own venv,
/tmp/lmepy), on sleepstudy, penicillin and a simulated kb07-size maximal model: 56 subjects x 32
items, three +-1 predictors (spkr, prec, load) with correlated random intercepts and slopes of all
three for subjects and for items (4 x 4 covariances each: 20 covariance parameters).

Times are of the table after the fit: jaxmm's first call (with compilation) and a second model of
the same shape (compiled code reused); R's as documented in bench/ddf_lmertest.R. Agreement: the
largest relative difference of df and of Pr(>|t|) between jaxmm and R. The machine is shared.

    python bench/bench_ddf.py      ->  bench/results/ddf.json
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import RESULTS, code_version, load, run_meta, run_rscript

import jaxmm

KB07 = "rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load|subj) + (1 + spkr + prec + load|item)"
LMEPY = Path("/tmp/lmepy/bin/python")


def kb07_like(seed: int = 7) -> pd.DataFrame:
    """56 subjects x 32 items, each item seen once by each subject in one of 8 conditions (the three
    +-1 predictors), counterbalanced: condition (subject + item) mod 8, so that every predictor varies
    within subjects and within items."""
    rng = np.random.default_rng(seed)
    subj, item = np.meshgrid(np.arange(56), np.arange(32), indexing="ij")
    subj, item = subj.ravel(), item.ravel()
    cond = (subj + item) % 8
    x = np.stack([np.where((cond >> b) % 2 == 1, 1.0, -1.0) for b in range(3)], axis=1)
    cov = np.array([[1.0, 0.3, 0.2, 0.1], [0.3, 0.5, 0.1, 0.0], [0.2, 0.1, 0.4, 0.1], [0.1, 0.0, 0.1, 0.3]])
    b_s = rng.multivariate_normal(np.zeros(4), 300.0**2 * cov, 56)
    b_i = rng.multivariate_normal(np.zeros(4), 200.0**2 * cov, 32)
    design = np.column_stack([np.ones(len(subj)), x])
    rt = design @ np.array([2000.0, 60.0, -300.0, 100.0]) + np.sum(design * (b_s[subj] + b_i[item]), axis=1)
    rt += rng.normal(0.0, 600.0, len(subj))
    return pd.DataFrame(
        {
            "subj": [f"S{s:02d}" for s in subj],
            "item": [f"I{i:02d}" for i in item],
            "spkr": x[:, 0],
            "prec": x[:, 1],
            "load": x[:, 2],
            "rt": np.round(rt, 3),
        }
    )


def lme_python(name: str, formula: str, csv: str) -> dict:
    if not LMEPY.exists():
        return {"available": False}
    code = f"""
import json, time, pandas as pd, lme_python as lp
d = pd.read_csv({csv!r})
t = time.perf_counter(); m = lp.lmer({formula!r}, d, reml=True); fit = time.perf_counter() - t
t = time.perf_counter(); m.with_satterthwaite(d); sat = time.perf_counter() - t
t = time.perf_counter(); m.with_kenward_roger(d); kr = time.perf_counter() - t
print(json.dumps({{"fit_s": fit, "satterthwaite_s": sat, "kenward_roger_s": kr,
                  "satterthwaite_df": m.satterthwaite_dfs, "kenward_roger_df": m.kenward_roger_dfs,
                  "satterthwaite_p": m.satterthwaite_p_values, "kenward_roger_p": m.kenward_roger_p_values}}))
"""
    run = subprocess.run([str(LMEPY), "-c", code], capture_output=True, text=True)
    if run.returncode:
        return {"available": True, "error": run.stderr.strip().splitlines()[-1]}
    return {"available": True, **json.loads(run.stdout)}


def main() -> None:
    loads = {"start": load()}
    code = code_version()
    tmp = Path(tempfile.mkdtemp())
    data = {
        "sleepstudy": ("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy")),
        "penicillin": ("diameter ~ 1 + (1|plate) + (1|sample)", jaxmm.dataset("penicillin")),
        "kb07_sim": (KB07, kb07_like()),
    }
    for name, (_, d) in data.items():
        d.to_csv(tmp / f"{name}.csv", index=False)
    loads["R"] = load()
    r = run_rscript("ddf_lmertest", str(tmp / "kb07_sim.csv"))
    out = {}
    for name, (formula, d) in data.items():
        loads[name] = load()
        row = {"formula": formula, "nobs": len(d), "R": {k: r[name][k] for k in r[name] if k.endswith("_s")}}
        for method, key in [("satterthwaite", "satterthwaite"), ("kenward-roger", "kenward_roger")]:
            times = []
            for _ in range(2):  # first: with compilation; second: a new model of the same shape
                m = jaxmm.fit(formula, d, REML=True)
                start = time.perf_counter()
                table = m.coeftable(ddf=method)
                times.append(time.perf_counter() - start)
            ref = pd.DataFrame(r[name][key]).set_index("term")
            row[method] = {
                "first_call_s": times[0],
                "compiled_s": times[1],
                "max_rel_diff_df": float(np.max(np.abs(table["df"].to_numpy() / ref["df"].to_numpy() - 1))),
                "max_rel_diff_p": float(np.max(np.abs(table["Pr(>|t|)"].to_numpy() / ref["Pr(>|t|)"].to_numpy() - 1))),
                "df": table["df"].tolist(),
            }
        lp = lme_python(name, formula, str(tmp / f"{name}.csv"))
        if lp.get("satterthwaite_df"):
            for key in ("satterthwaite", "kenward_roger"):
                if lp.get(f"{key}_df"):
                    ref = pd.DataFrame(r[name][key])["df"].to_numpy()
                    lp[f"{key}_max_rel_diff_df_vs_R"] = float(np.max(np.abs(np.asarray(lp[f"{key}_df"]) / ref - 1)))
        row["lme_python"] = lp
        out[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "formula"}, default=str)[:600], flush=True)
    result = {"meta": run_meta(loads, code), "R_meta": r["_meta"], "models": out}
    (RESULTS / "ddf.json").write_text(json.dumps(result, indent=2))
    print("wrote", RESULTS / "ddf.json")


if __name__ == "__main__":
    main()
