"""An LMM with 1,000,000 rows and two crossed factors, fitted and bootstrapped, beside lme4's lmer.

    PYTHONPATH=. python bench/bench_large_n.py                  # ~5-8 min on 2 cores (lme4 ~2-3 of them)
    PYTHONPATH=. python bench/bench_large_n.py --baseline DIR   # also jaxmm from another checkout (before/after)
    PYTHONPATH=. python bench/bench_large_n.py --rows 20000 --nsamp 10 --skip-lme4   # a quick check

The data (seeded; written to /tmp/jaxmm_large_n as Parquet for jaxmm and CSV for R): n rows, factor a
with 10,000 levels and b with 100, each row's levels drawn uniformly, a covariate x ~ N(0, 1), and

    y = 1 + 0.5 x + a_j + b_k + e,   a_j ~ N(0, 1), b_k ~ N(0, 0.5^2), e ~ N(0, 1),

fitted by maximum likelihood as y ~ 1 + x + (1|a) + (1|b). Every phase runs in a fresh process under
/usr/bin/time -v (its peak resident set; where /usr/bin/time is missing, the children's ru_maxrss), one
after another, with os.getloadavg() recorded before each; reading the data is not timed:

  fit         LinearMixedModel(formula, df) (construction) then m.fit(REML=False): the first call
              (JAX compiles) and `--repeats` warm ones (construction + fit, compiled code reused);
              the process's peak RSS, and its peak RSS after reading the data and `import jaxmm` (which
              loads no JAX), after the first construction and after the first fit
  bootstrap   a fit, then jaxmm.parametricbootstrap(seed, nsamp, m): the first call (the kernel
              compiles) and a second (warm); peak RSS; the lane width and the rows a lane draws at a time
  lme4        Rscript bench/lme4_large_n.R (lmer, `--repeats` + 1 fits: the first in a fresh R session,
              then warm); peak RSS, and R's gc() max used

Writes bench/results/large_n.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, ROOT, code_version, load, run_meta

FORMULA = "y ~ 1 + x + (1|a) + (1|b)"
DATA = Path("/tmp/jaxmm_large_n")

_FIT = """
import json, resource, sys, time
import pandas as pd
df = pd.read_parquet(sys.argv[1])
import jaxmm
rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"jaxmm_file": jaxmm.__file__, "rss_after_data_and_import_mb": rss_ready, "construct_s": [], "fit_s": []}
for i in range(1 + int(sys.argv[2])):
    t = time.perf_counter()
    m = jaxmm.LinearMixedModel(sys.argv[3], df)
    out["construct_s"].append(time.perf_counter() - t)
    if i == 0:
        out["rss_after_first_construct_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    m.fit(REML=False)
    out["fit_s"].append(time.perf_counter() - t)
    if i == 0:
        out["compile_s"] = m.optsum.compile_s
        out["rss_after_first_fit_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out.update(objective=m.objective, theta=list(map(float, m.theta)), beta=m.beta.tolist(),
           z1zr_dense=bool(m.design.blocks.dense_z1zr), niter=m.optsum.niter)
json.dump(out, open(sys.argv[4], "w"))
"""

_BOOT = """
import json, resource, sys, time
import numpy as np, pandas as pd
df = pd.read_parquet(sys.argv[1])
import jaxmm
from jaxmm.bootstrap.engine import lane_width
m = jaxmm.fit(sys.argv[3], df, REML=False)
rss_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"jaxmm_file": jaxmm.__file__, "rss_after_fit_mb": rss_fit, "boot_s": []}
out.update(lane_width=lane_width(m, "cpu"), lane_bytes=m.lane_bytes())
try:
    from jaxmm.lmm import row_chunks
    out["row_chunks"] = list(row_chunks(m.structure.n))
except ImportError:  # a checkout that draws the whole response at once
    out["row_chunks"] = [1, m.structure.n]
for _ in range(2):
    t = time.perf_counter()
    samp = jaxmm.parametricbootstrap(int(sys.argv[4]), int(sys.argv[2]), m, progress=False)
    out["boot_s"].append(time.perf_counter() - t)
r = samp.replicates
out.update(converged=int(r.converged.sum()), niter_mean=float(r.niter.mean()),
           theta_mean=np.asarray(r.theta).mean(axis=0).tolist(), objective_mean=float(r.objective.mean()))
json.dump(out, open(sys.argv[5], "w"))
"""


def make_data(rows: int, levels: tuple[int, int], seed: int) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd

    DATA.mkdir(exist_ok=True)
    parquet, csv = DATA / f"data_{rows}_{seed}.parquet", DATA / f"data_{rows}_{seed}.csv"
    if parquet.exists() and csv.exists():
        return parquet, csv
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, levels[0], rows), rng.integers(0, levels[1], rows)
    x = rng.normal(size=rows)
    y = 1.0 + 0.5 * x + rng.normal(size=levels[0])[a] + 0.5 * rng.normal(size=levels[1])[b] + rng.normal(size=rows)
    df = pd.DataFrame(
        {
            "y": y,
            "x": x,
            "a": pd.Categorical([f"a{i:05d}" for i in a]),
            "b": pd.Categorical([f"b{i:03d}" for i in b]),
        }
    )
    df.to_parquet(parquet)
    df.to_csv(csv, index=False)
    return parquet, csv


def measured(cmd: list[str], env: dict | None = None, cwd: Path = ROOT) -> tuple[float, float]:
    """Run cmd in `cwd` to completion: (wall seconds, peak RSS in MB of the process tree's largest process)."""
    timer = Path("/usr/bin/time")
    start = time.perf_counter()
    if timer.exists():
        res = subprocess.run([str(timer), "-v", *cmd], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if res.returncode:
            sys.stderr.write(res.stderr)
            raise subprocess.CalledProcessError(res.returncode, cmd)
        return wall, int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1)) / 1024
    subprocess.run(cmd, cwd=cwd, env=env, check=True)
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def jaxmm_phases(label: str, path: Path, parquet: Path, args, loads: dict) -> dict:
    """The fit and bootstrap phases with jaxmm from checkout `path`, each in a fresh process run there
    (`python -c` puts the working directory first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": str(path), "JAXMM_CACHE_DIR": ""}
    out = {"checkout": str(path)}
    tmp = DATA / f"{label}.json"
    loads[f"{label}_fit"] = load()
    wall, peak = measured([sys.executable, "-c", _FIT, str(parquet), str(args.repeats), FORMULA, str(tmp)], env, path)
    out["fit"] = {**json.loads(tmp.read_text()), "wall_s": wall, "peak_rss_mb": peak}
    print(label, "fit", json.dumps(out["fit"]), flush=True)
    loads[f"{label}_bootstrap"] = load()
    cmd = [sys.executable, "-c", _BOOT, str(parquet), str(args.nsamp), FORMULA, str(args.seed), str(tmp)]
    wall, peak = measured(cmd, env, path)
    out["bootstrap"] = {**json.loads(tmp.read_text()), "wall_s": wall, "peak_rss_mb": peak}
    print(label, "bootstrap", json.dumps(out["bootstrap"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--levels", type=int, nargs=2, default=(10_000, 100))
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--nsamp", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="warm fits after the first (jaxmm and lme4)")
    ap.add_argument("--baseline", type=Path, help="another checkout whose jaxmm also runs (before/after)")
    ap.add_argument("--skip-lme4", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "large_n.json")
    args = ap.parse_args()

    import jaxmm  # noqa: F401  (code_version describes the jaxmm this checkout holds)

    code = code_version()
    loads = {"start": load()}
    parquet, csv = make_data(args.rows, tuple(args.levels), args.seed)
    record = {"rows": args.rows, "levels": list(args.levels), "formula": FORMULA, "seed": args.seed}
    record["nsamp"] = args.nsamp
    record["jaxmm"] = jaxmm_phases("jaxmm", ROOT, parquet, args, loads)
    if args.baseline:
        record["baseline"] = jaxmm_phases("baseline", args.baseline.resolve(), parquet, args, loads)
    if not args.skip_lme4:
        loads["lme4"] = load()
        tmp = DATA / "lme4.json"
        wall, peak = measured(["Rscript", "bench/lme4_large_n.R", str(csv), str(tmp), str(1 + args.repeats)])
        record["lme4"] = {**json.loads(tmp.read_text()), "wall_s": wall, "peak_rss_mb": peak}
        print("lme4", json.dumps(record["lme4"]), flush=True)
    loads["end"] = load()
    record["_meta"] = run_meta(loads, code)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(record))


def table(record: dict) -> str:
    """The markdown table of a record: seconds, peak MB, and lme4's time over jaxmm's."""
    lme4 = record.get("lme4")
    lmer_first = lme4["times"][0] if lme4 else None
    lmer_warm = min(lme4["times"][1:]) if lme4 and len(lme4["times"]) > 1 else None
    rows = [
        "| program | construct + fit, first (s) | construct + fit, warm (s) | fit peak RSS (MB) "
        f"| bootstrap, {record['nsamp']} replicates (s: first, warm) | bootstrap peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for label in ("baseline", "jaxmm"):
        if label not in record:
            continue
        fit, boot = record[label]["fit"], record[label]["bootstrap"]
        first = fit["construct_s"][0] + fit["fit_s"][0]
        warm = min(c + f for c, f in zip(fit["construct_s"][1:], fit["fit_s"][1:]))
        ratio = f" ({lmer_first / first:.1f}x / {lmer_warm / warm:.1f}x lmer)" if lme4 else ""
        name = "jaxmm" if label == "jaxmm" else f"jaxmm, baseline ({record[label]['checkout']})"
        rows.append(
            f"| {name} | {first:.2f} | {warm:.2f}{ratio} | {fit['peak_rss_mb']:.0f} "
            f"| {boot['boot_s'][0]:.1f}, {boot['boot_s'][1]:.1f} | {boot['peak_rss_mb']:.0f} |"
        )
    if lme4:
        rows.append(f"| lme4 lmer | {lmer_first:.2f} | {lmer_warm:.2f} | {lme4['peak_rss_mb']:.0f} | – | – |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
