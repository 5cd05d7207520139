"""The parametric bootstrap of jaxmm beside lme4's bootMer and the Python peers lme-python and mixedlm, per
replicate in steady state, side by side in one run (issue 24).

    PYTHONPATH=. python bench/bench_peers_bootstrap.py                    # ~10 min on 2 shared cores
    PYTHONPATH=. python bench/bench_peers_bootstrap.py --models sleepstudy,penicillin --reps 1000 --peer-reps 100
    PYTHONPATH=. python bench/bench_peers_bootstrap.py --skip lme4,mixedlm    # some programs only
    PYTHONPATH=. python bench/bench_peers_bootstrap.py --devices 2           # jaxmm on both cores (2 CPU devices)

Models (all ML / Laplace):
  dyestuff       yield ~ 1 + (1|batch)
  sleepstudy     reaction ~ 1 + days + (1 + days|subj)
  penicillin     diameter ~ 1 + (1|plate) + (1|sample)
  pastes         strength ~ 1 + (1|batch/cask)
  kb07_zerocorr  rt ~ 1 + spkr + prec + load + (1 + spkr + prec + load || subj) + (same || item), on
                 bench_ddf.kb07_like() (56 subjects x 32 items)
  cbpp           prop ~ 1 + period + (1|herd), prop = incidence/size, weights size (binomial)
  grouseticks    ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location) (Poisson)

Programs and what each bootstrap simulates:
  jaxmm       parametricbootstrap(seed, nsamp, m, progress=False, use_u=...): both modes are timed, use_u=False
              (random effects redrawn, as bootMer's use.u = FALSE and mixedlm) and use_u=True (random effects
              held at the fit's conditional modes, as lme-python's parametric bootstrap). Per mode: one
              untimed run of one lane width (compiles), then the best of `--repeats` runs (3; kb07 and
              grouseticks 2), seeds 2, 3, 4.
              OPENBLAS_NUM_THREADS=1 (as bench_glmm_bootstrap.py: XLA's CPU LAPACK calls go to OpenBLAS).
  lme4        bootMer(fit, FUN, nsim, type = "parametric", use.u = FALSE) (bench/lme4_bootmer_peers.R), one
              timed run per model after the fit (bootMer compiles nothing).
  lme-python  boot_lmer / boot_glmer (n_jobs=2, reml=False), its own interpreter (--lmepy); random effects held
              at their modes (checked on sleepstudy's simulate: see bench/_peer_boot_runner.py). Best of 3
              after a warm-up bootstrap of 2 replicates.
  mixedlm     bootMer(fit, nsim, seed, n_jobs=2) (--mixedlm; install: python -m venv /tmp/mixedlm &&
              /tmp/mixedlm/bin/pip install mixedlm pandas); random effects redrawn. Best of 3 after a warm-up.
A missing interpreter or Rscript is recorded as not run. The replicate counts per model are REPS below
(jaxmm's nsamp is at least two lane widths, `jaxmm.bootstrap.lane_width`); --reps N and --peer-reps N set
jaxmm's and the peers' (lme4 included) for every model.

Ratios: peer ms/replicate over jaxmm's in the same simulation mode (lme4 and mixedlm against use_u=False,
lme-python against use_u=True). Writes bench/results/peers_bootstrap.json (loads before every phase, the
jaxmm code that ran) and prints a markdown table.
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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import numpy as np
from _common import RESULTS, ROOT, code_version, load, run_meta
from bench_ddf import kb07_like

import jaxmm
from jaxmm.bootstrap import lane_width

BARS = "(1 + spkr + prec + load || subj) + (1 + spkr + prec + load || item)"
SMALL = (4000, 400, 100, 200)
# name: (formula, data set, factor columns, family, weights), and the default replicates per timed run:
# (jaxmm nsamp, lme-python nsim, mixedlm nsim, lme4 nsim)
MODELS = {
    "dyestuff": ("yield ~ 1 + (1|batch)", "dyestuff", ["batch"], None, None),
    "sleepstudy": ("reaction ~ 1 + days + (1 + days|subj)", "sleepstudy", ["subj"], None, None),
    "penicillin": ("diameter ~ 1 + (1|plate) + (1|sample)", "penicillin", ["plate", "sample"], None, None),
    "pastes": ("strength ~ 1 + (1|batch/cask)", "pastes", ["batch", "cask"], None, None),
    "kb07_zerocorr": (f"rt ~ 1 + spkr + prec + load + {BARS}", "kb07_like", ["subj", "item"], None, None),
    "cbpp": ("prop ~ 1 + period + (1|herd)", "cbpp", ["herd", "period"], "binomial", "size"),
    "grouseticks": (
        "ticks ~ 1 + year + cheight + (1|index) + (1|brood) + (1|location)",
        "grouseticks",
        ["index", "brood", "location", "year"],
        "poisson",
        None,
    ),
}
REPS = {
    "dyestuff": SMALL,
    "sleepstudy": SMALL,
    "penicillin": SMALL,
    "pastes": SMALL,
    "kb07_zerocorr": (64, 6, 8, 8),
    "cbpp": (800, 100, 50, 50),
    "grouseticks": (64, 40, 10, 10),
}
PEERS = ("lme4", "lmepy", "mixedlm")


def data(name: str):
    if name == "kb07_like":
        return kb07_like()
    d = jaxmm.dataset(name)
    if name == "cbpp":  # jaxmm's binomial response is the proportion, with the trials as weights
        d = d.assign(prop=d["incidence"] / d["size"])
    return d


def jaxmm_model(name: str):
    formula, dname, _, family, weights = MODELS[name]
    d = data(dname)
    if family is None:
        return jaxmm.fit(formula, d, REML=False)
    return jaxmm.fit(formula, d, family=family, weights=weights)


def time_jaxmm(m, nsamp: int, use_u: bool, repeats: int, width: int, devices: int | None = None) -> dict:
    """Best of `repeats` warm runs, ms per replicate. One untimed run of one lane width per device compiles
    first: the kernel's shape is fixed per model (lane_width), whatever nsamp. `devices`: parametricbootstrap's
    (None: jaxmm's choice, which starts a second CPU device only for a run long enough to repay it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a replicate that does not converge is counted below, not printed
        t = time.perf_counter()
        jaxmm.parametricbootstrap(1, width * (devices or 1), m, progress=False, use_u=use_u, devices=devices)
        first = time.perf_counter() - t
        times, unconverged, niter = [], 0, []
        for seed in range(2, 2 + repeats):
            t = time.perf_counter()
            samp = jaxmm.parametricbootstrap(seed, nsamp, m, progress=False, use_u=use_u, devices=devices)
            times.append(time.perf_counter() - t)
            unconverged += int((~samp.converged).sum())
            niter.append(float(np.mean(samp.replicates.niter)))
    return {
        "nsamp": nsamp,
        "first_run_s (one lane width, compiles)": first,
        "times_s": times,
        "ms_per_replicate": 1e3 * min(times) / nsamp,
        "unconverged": unconverged,
        "mean_niter": float(np.mean(niter)),
    }


def write_csvs(names: list[str], folder: Path) -> dict:
    """Each model's data as CSV for the other programs; factor columns are read back as strings there."""
    specs = {}
    for name in names:
        formula, dname, factors, family, weights = MODELS[name]
        path = folder / f"{name}.csv"
        d = data(dname)
        d.to_csv(path, index=False)
        specs[name] = {"formula": formula, "csv": str(path), "factors": factors, "family": family, "weights": weights}
    return specs


def run_peer(peer: str, python: str, specs: dict, nsim: dict, repeats: int, folder: Path) -> dict:
    if not Path(python).exists():
        return {"not_run": f"no interpreter at {python}"}
    spec = {"n_jobs": 2, "repeats": repeats, "models": {n: {**s, "nsim": nsim[n]} for n, s in specs.items()}}
    spec_path, out = folder / f"{peer}_spec.json", folder / f"{peer}_out.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "PYTHONPATH")}
    print("running", peer, flush=True)
    r = subprocess.run([python, str(ROOT / "bench" / "_peer_boot_runner.py"), peer, str(spec_path), str(out)], env=env)
    if r.returncode != 0 or not out.exists():
        return {"not_run": f"runner exited {r.returncode}"}
    return json.loads(out.read_text())


def run_lme4(specs: dict, nsim: dict, folder: Path) -> dict:
    if shutil.which("Rscript") is None:
        return {"not_run": "no Rscript"}
    spec_path, out = folder / "lme4_spec.json", folder / "lme4_out.json"
    spec_path.write_text(json.dumps({n: {**s, "nsim": nsim[n]} for n, s in specs.items()}))
    print("running Rscript bench/lme4_bootmer_peers.R", flush=True)
    r = subprocess.run(["Rscript", "bench/lme4_bootmer_peers.R", str(spec_path), str(out)], cwd=ROOT)
    if r.returncode != 0 or not out.exists():
        return {"not_run": f"Rscript exited {r.returncode}"}
    return json.loads(out.read_text())


def ratio_cell(row: dict, peer: str) -> str:
    """peer / jaxmm, with a * where fewer than 90 % of the peer's refits converged."""
    ratio, ok = row[f"{peer}_over_jaxmm"], row[f"{peer}_converged_fraction"]
    if ratio is None:
        return "n/a"
    return fmt(ratio) + "x" + ("" if ok is None or ok >= 0.9 else f" * ({100 * ok:.0f} % converged)")


def fmt(x, digits=3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if x < 1000 else f"{x:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    ap.add_argument("--reps", type=int, help="jaxmm's replicates per timed run, every model (default: per model)")
    ap.add_argument("--peer-reps", type=int, help="the peers' and lme4's replicates per run (default: per model)")
    ap.add_argument(
        "--repeats", type=int, help="timed runs per model (best counts); default 3 (jaxmm: 2 for kb07, grouseticks)"
    )
    ap.add_argument("--skip", default="", help="comma-separated programs not to run: lme4, lmepy, mixedlm")
    ap.add_argument("--lmepy", default="/tmp/lmepy/bin/python", help="the interpreter with lme_python")
    ap.add_argument("--mixedlm", default="/tmp/mixedlm/bin/python", help="the interpreter with mixedlm")
    ap.add_argument("--out", default=str(RESULTS / "peers_bootstrap.json"))
    ap.add_argument("--devices", type=int, help="jaxmm's CPU devices (default: jaxmm's choice; 2: both cores)")
    args = ap.parse_args()
    if args.devices:
        jax.config.update("jax_num_cpu_devices", args.devices)  # before JAX starts
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    version, loads, walls = code_version(), {"start": load()}, {}
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")

    rows = {}
    for name in names:
        loads[f"jaxmm {name}"] = load()
        t = time.perf_counter()
        m = jaxmm_model(name)
        fit_s = time.perf_counter() - t
        width = lane_width(m, "cpu")
        nsamp = args.reps or max(REPS[name][0], 2 * width)
        repeats = args.repeats or (2 if name in ("kb07_zerocorr", "grouseticks") else 3)
        row = {"formula": MODELS[name][0], "jaxmm_fit_s": fit_s, "lane_width": width, "objective": float(m.objective)}
        row["jaxmm_devices"] = args.devices or "jaxmm's choice"
        for use_u in (False, True):
            row[f"jaxmm_use_u_{use_u}"] = time_jaxmm(m, nsamp, use_u, repeats, width, args.devices)
            r = row[f"jaxmm_use_u_{use_u}"]
            print(f"jaxmm {name} use_u={use_u}: {r['ms_per_replicate']:.4f} ms/rep ({nsamp} reps)", flush=True)
        rows[name] = row
        walls[f"jaxmm {name}"] = time.perf_counter() - t
        del m

    nsim = {p: {n: args.peer_reps or REPS[n][i] for n in names} for i, p in enumerate(("lmepy", "mixedlm", "lme4"), 1)}
    peers = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        specs = write_csvs(names, folder)
        for peer in PEERS:
            loads[peer], t = load(), time.perf_counter()
            if peer in skip:
                peers[peer] = {"not_run": "--skip"}
            elif peer == "lme4":
                peers[peer] = run_lme4(specs, nsim["lme4"], folder)
                walls[peer] = time.perf_counter() - t
            else:
                python = args.lmepy if peer == "lmepy" else args.mixedlm
                peers[peer] = run_peer(peer, python, specs, nsim[peer], args.repeats or 3, folder)
            walls[peer] = time.perf_counter() - t
    loads["end"] = load()

    mode = {"lme4": False, "lmepy": True, "mixedlm": False}
    for name, row in rows.items():
        for peer in PEERS:
            rec = peers[peer].get("models", {}).get(name, {}) if peer != "lme4" else peers[peer].get(name, {})
            ms = rec.get("ms_per_replicate")
            row[f"{peer}_ms"] = ms
            row[f"{peer}_error"] = rec.get("error")
            jx = row[f"jaxmm_use_u_{mode[peer]}"]["ms_per_replicate"]
            row[f"{peer}_over_jaxmm"] = None if ms is None else ms / jx
            # replicates whose refit converged (lme4: without NA); a ratio over mostly failed refits is flagged
            ok = rec.get("converged", None if "n_failed" not in rec else rec.get("nsim", 0) - rec["n_failed"])
            row[f"{peer}_converged_fraction"] = None if ok is None else ok / max(1, rec.get("of", rec.get("nsim", 1)))

    print()
    print(
        "| model | jaxmm use_u=False (ms/rep) | jaxmm use_u=True (ms/rep) | lme4 bootMer use.u=FALSE | "
        "lme-python (use.u=TRUE) | mixedlm (use.u=FALSE) | lme4 / jaxmm | lme-python / jaxmm | mixedlm / jaxmm |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        cells = [fmt(row["jaxmm_use_u_False"]["ms_per_replicate"]), fmt(row["jaxmm_use_u_True"]["ms_per_replicate"])]
        cells += [fmt(row[f"{p}_ms"]) if row[f"{p}_ms"] is not None else "n/a" for p in PEERS]
        cells += [ratio_cell(row, p) for p in PEERS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for peer in PEERS:
        if "not_run" in peers[peer]:
            print(f"{peer}: not run ({peers[peer]['not_run']})")
    for name, row in rows.items():
        for peer in PEERS:
            if row[f"{peer}_error"]:
                print(f"{peer} {name}: {row[f'{peer}_error']}")

    meta = run_meta(loads, version)
    meta["started"] = started
    meta["phase_wall_s"] = walls
    result = {"run": meta, "args": vars(args), "models": rows, "peers": peers}
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
