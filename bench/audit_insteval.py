"""Convergence audit of insteval's bootstrap, in parts: the replicates of parametricbootstrap(seed, ., m)
for `y ~ 1 + service + (1|s) + (1|d) + (1|dept)` (73,421 observations), against an independent refit.

bench_convergence_audit.py audits the other shipped models in one process; insteval is too large
for that (jaxmm's bootstrap takes about 2.4 s per replicate on one core, and that script's batched
Newton refit on jaxmm.deviance.objective about 2 minutes). Here the work is cut into parts of --part
replicates, each part with two sides (jaxmm's fits and an independent refit of the same simulated
responses), and any number of worker processes, one per core, take the parts not yet done, saving
each to --dir as it finishes; a run can stop at any time and resume (parts saved are skipped, a
dead worker's part is taken over), and the report counts the replicates both sides reached:

    taskset -c 0 python bench/audit_insteval.py work --first 0 --last 10000 &   # one per core
    taskset -c 1 python bench/audit_insteval.py work --first 0 --last 10000 &
    python bench/audit_insteval.py report                                     # into convergence_audit.json

(with PYTHONPATH=. and OPENBLAS_NUM_THREADS=1, from the repository root). One worker per core and
pinned: XLA's CPU kernels may differ in their last bits with the number of threads they use.

jaxmm side: a part's replicates of the bootstrap, fitted by jaxmm's engine (`simulate_and_refit`
over a range of replicate numbers: replicate i is bit-identical whatever the part, see
parametricbootstrap); about 2.4 s per replicate on one core. The part starting at 0 is checked
against parametricbootstrap itself.

Refit side: the profiled ML deviance written again with NumPy, SciPy's sparse products and
LAPACK's Cholesky factor (`SparseDeviance`: nothing of jaxmm but the model matrices and the
simulated response), minimised by saddle-free Newton steps on finite-difference derivatives
(`newton`, about 1.5 s per replicate on one core) from the generating theta, and also from the
boundary face theta_t = 0 where the first fit ends with a theta_t below 0.01.

The report adds: the independent deviance at jaxmm's stored theta against jaxmm's stored
objective, for every replicate; a refit from lme4's start on the first --lme4-start-subsample
replicates; and a polish (Newton from jaxmm's own theta) of every replicate that is unconverged or
worse than the refit. These checks are saved per part (check_{lo}_{hi}.npz in --dir), so a report
only computes the parts new since the last one (about 0.1 s per replicate on one core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scipy.linalg
import scipy.sparse as sp
from _common import FORMULAS, RESULTS, audit_counts, code_version, load, run_meta

import jaxmm
from jaxmm import bootstrap as jb
from jaxmm.bootstrap import simulated_responses

CODE_VERSION = code_version()
TOLERANCE = 1e-6  # relative, as bench_convergence_audit.py


def model():
    return jaxmm.fit(FORMULAS["insteval"], jaxmm.dataset("insteval"))


def jaxmm_part(m, seed: int, first: int, last: int) -> dict[str, np.ndarray]:
    """jaxmm's fits of replicates first..last-1 of parametricbootstrap(seed, ., m), by its engine
    on one device, as parametricbootstrap runs it (the part starting at 0 is checked against
    parametricbootstrap itself)."""
    sim = m.simulation_parameters()
    (rep,), _ = jb.simulate_and_refit(seed, last - first, m, sim, (m,), devices=1, progress=False, first=first)
    if first == 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            whole = jaxmm.parametricbootstrap(seed, 2, m, progress=False).replicates
        assert np.array_equal(whole.objective, rep.objective[:2]) and np.array_equal(whole.theta, rep.theta[:2])
    return {"objective": rep.objective, "theta": rep.theta, "converged": rep.converged, "niter": rep.niter}


def part_path(directory: Path, side: str, lo: int, hi: int) -> Path:
    """Where the part of `side` (jaxmm, refit or check) for replicates lo..hi-1 is saved."""
    return directory / f"{side}_{lo:05d}_{hi:05d}.npz"


def claim(path: Path) -> bool:
    """Take the part saved as `path` for this process (its claim file holds our pid): False where
    it is saved already or a live process holds the claim. A dead process's claim is taken over."""
    if path.exists():  # no claim file for a part already saved
        return False
    lock = path.with_suffix(".claim")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(lock.read_text())
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            lock.unlink(missing_ok=True)
            return claim(path)
        except (OSError, ValueError):  # gone meanwhile, not yet written, or another user's live process
            return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    if path.exists():  # saved by its claimant between our look and our claim
        lock.unlink()
        return False
    return True


def work(args) -> None:
    """One worker: run one per core. Until every part of replicates --first..--last-1 is saved or
    taken, take a part nobody has taken (the refit of a part whose jaxmm fits are saved first, so
    that both sides of a part finish together; else the next part's jaxmm fits), compute it and
    save it in --dir as {side}_{lo}_{hi}.npz, with its seconds and the load."""
    m = model()
    dev = SparseDeviance(m)
    compute = {
        "jaxmm": lambda lo, hi: jaxmm_part(m, args.seed, lo, hi),
        "refit": lambda lo, hi: refit_part(m, dev, args.seed, lo, hi),
    }
    directory = Path(args.dir)
    parts = [(lo, min(lo + args.part, args.last)) for lo in range(args.first, args.last, args.part)]
    while True:
        todo = [("refit", b) for b in parts if part_path(directory, "jaxmm", *b).exists()] + [
            ("jaxmm", b) for b in parts
        ]
        task = next(((side, b) for side, b in todo if claim(part_path(directory, side, *b))), None)
        if task is None:
            return
        side, (lo, hi) = task
        path = part_path(directory, side, lo, hi)
        start = time.perf_counter()
        part = compute[side](lo, hi)
        partial = directory / f".{path.name}"  # not a part until it is whole
        np.savez(partial, seconds=time.perf_counter() - start, load=load(), **part)
        os.replace(partial, path)
        path.with_suffix(".claim").unlink()
        print(f"{side} {lo}..{hi - 1}: {time.perf_counter() - start:.1f} s", flush=True)


class SparseDeviance:
    """The profiled ML deviance of a model with scalar random-effects terms, written again with
    NumPy, SciPy's sparse products and LAPACK's Cholesky factor (nothing of jaxmm's deviance).

    With b_t = theta_t sigma u_t, the first term's (diagonal) block d_j = theta_1^2 (Z1'Z1)_jj + 1
    is eliminated in closed form, w_j = theta_1^2 / d_j, leaving the dense Schur complement over
    [Zr, X, y] (Zr: terms 2..T, scaled by their theta, l = theta per column)

        S = [ l (Zr'Zr - Zr'Z1 W Z1'Zr) l + I    l (Zr'B - Zr'Z1 W Z1'B) ]     B = [X y]
            [ .                                  B'B - B'Z1 W Z1'B        ]

    and with L = chol(S), r^2 = L[-1, -1]^2 and log|L_Z|^2 = sum log d_j + 2 sum_(i < qr) log L_ii,

        d(theta) = log|L_Z|^2 + n (1 + log(2 pi r^2 / n)).
    """

    def __init__(self, m):
        mats, terms = m.design.matrices, m.structure.terms
        assert all(t.k == 1 for t in terms) and not m.REML
        self.n, self.x = len(m.design.y), np.asarray(mats.x)
        z = [
            sp.csc_matrix((np.asarray(zt)[:, 0], (np.arange(self.n), np.asarray(r))), shape=(self.n, t.nlevels))
            for t, r, zt in zip(terms, mats.refs, mats.z)
        ]
        self.z1, self.zr = z[0], sp.hstack(z[1:]).tocsc()
        self.column_term = np.repeat(np.arange(1, len(terms)), [t.nlevels for t in terms[1:]])
        self.a1 = np.asarray(self.z1.multiply(self.z1).sum(axis=0)).ravel()
        self.r1 = (self.zr.T @ self.z1).tocsc()  # Zr'Z1
        self.rr = (self.zr.T @ self.zr).toarray()
        self.qr = self.rr.shape[0]
        self.outer = self._outer_products()

    def _outer_products(self) -> sp.csr_matrix:
        """Q with vec(Zr'Z1 W Z1'Zr) = Q w: column j holds vec of (Zr'Z1)_j (Zr'Z1)_j'. A sparse
        matrix-vector product per evaluation (4 ms) instead of a sparse matrix product (26 ms)."""
        rows, cols, vals = [], [], []
        for j in range(self.r1.shape[1]):
            lo, hi = self.r1.indptr[j], self.r1.indptr[j + 1]
            idx, v = self.r1.indices[lo:hi], self.r1.data[lo:hi]
            rows.append((idx[:, None] * self.qr + idx[None, :]).ravel())
            cols.append(np.full(len(idx) ** 2, j))
            vals.append(np.outer(v, v).ravel())
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.qr**2, self.r1.shape[1])
        )

    def stats(self, y: np.ndarray) -> tuple:
        """What the deviance needs of a response y: Z1'B, Zr'B and B'B for B = [X y]."""
        b = np.column_stack([self.x, y])
        return np.asarray(self.z1.T @ b), np.asarray(self.zr.T @ b), b.T @ b

    def __call__(self, theta: np.ndarray, stats: tuple) -> float:
        z1b, zrb, bb = stats
        theta = np.abs(theta)  # the deviance is even in each theta_t
        d = theta[0] ** 2 * self.a1 + 1.0
        w = theta[0] ** 2 / d
        lr = theta[self.column_term]
        s_rr = self.rr - (self.outer @ w).reshape(self.qr, self.qr)
        s_rr = lr[:, None] * s_rr * lr[None, :] + np.eye(self.qr)
        s_rb = lr[:, None] * (zrb - self.r1 @ (w[:, None] * z1b))
        s_bb = bb - z1b.T @ (w[:, None] * z1b)
        chol = scipy.linalg.cholesky(np.block([[s_rr, s_rb], [s_rb.T, s_bb]]), lower=True, check_finite=False)
        logdet_z = np.sum(np.log(d)) + 2.0 * np.sum(np.log(np.diagonal(chol)[: self.qr]))
        return float(logdet_z + self.n * (1.0 + np.log(2.0 * np.pi * chol[-1, -1] ** 2 / self.n)))


STEP = 1e-4  # finite-difference step in theta (theta_t of insteval's fit: 0.07 to 0.44)
NEWTON_ITERATIONS = 30  # at most
DECREASE_REL = 1e-13  # stop once the predicted decrease is below this, relative to the objective


def derivatives(f, theta: np.ndarray, f0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (central differences) and Hessian (central on the diagonal, forward off it) of f
    at theta: 2 d + d (d - 1) / 2 evaluations besides f0."""
    d, h = len(theta), STEP
    eye = np.eye(d) * h
    plus = np.array([f(theta + e) for e in eye])
    minus = np.array([f(theta - e) for e in eye])
    grad = (plus - minus) / (2 * h)
    hess = np.diag((plus - 2 * f0 + minus) / h**2)
    for i in range(d):
        for j in range(i):
            hess[i, j] = hess[j, i] = (f(theta + eye[i] + eye[j]) - plus[i] - plus[j] + f0) / h**2
    return grad, hess


def newton(f, theta: np.ndarray) -> tuple[float, np.ndarray, float, int, int]:
    """Saddle-free Newton on finite-difference derivatives (eigenvalues of the Hessian replaced by
    their absolute values) with a halving line search, from theta: objective, |theta|, the last
    predicted decrease, iterations and evaluations."""
    evaluations = [0]

    def counted(th):
        evaluations[0] += 1
        return f(th)

    value, decrease = counted(theta), np.inf
    for k in range(NEWTON_ITERATIONS):  # noqa: B007 - k counts the iterations taken, returned below
        grad, hess = derivatives(counted, theta, value)
        w, v = np.linalg.eigh(hess)
        w = np.maximum(np.abs(w), 1e-10 * np.max(np.abs(w)))
        gv = v.T @ grad
        step, decrease = -v @ (gv / w), 0.5 * np.sum(gv**2 / w)
        if decrease < DECREASE_REL * abs(value):
            break
        for size in 2.0 ** -np.arange(40):
            trial = counted(theta + size * step)
            if trial < value:
                theta, value = theta + size * step, trial
                break
        else:
            break
    return value, np.abs(theta), decrease, k + 1, evaluations[0]


def refit(dev: SparseDeviance, generating: np.ndarray, y: np.ndarray) -> dict:
    """The independent refit of one response: Newton from the generating theta; where it ends
    with a theta_t below 0.01, also from the generating theta with theta_t = 0 (a boundary start:
    the deviance is even in theta_t, so Newton stays on that face and finds its best fit). The
    lowest objective wins."""
    stats = dev.stats(y)
    f = lambda th: dev(th, stats)
    fits = [newton(f, generating.copy())]
    for t in np.flatnonzero(fits[0][1] < 0.01):
        fits.append(newton(f, np.where(np.arange(len(generating)) == t, 0.0, generating)))
    best = min(range(len(fits)), key=lambda i: fits[i][0])
    value, theta, decrease, iterations, _ = fits[best]
    return {
        "objective": value,
        "theta": theta,
        "decrease": decrease,
        "iterations": iterations,
        "evaluations": sum(fit[4] for fit in fits),
        "start": best,
    }


def refit_part(m, dev: SparseDeviance, seed: int, first: int, last: int) -> dict[str, np.ndarray]:
    """The independent refits of replicates first..last-1 of parametricbootstrap(seed, ., m)."""
    fits = [refit(dev, m.theta, y) for y in simulated_responses(m, seed, last - first, first=first)]
    return {k: np.array([f[k] for f in fits]) for k in fits[0]}


def _parts(directory: Path, side: str) -> dict[tuple[int, int], dict]:
    out = {}
    for path in sorted(directory.glob(f"{side}_*.npz")):
        lo, hi = map(int, path.stem.split("_")[1:])
        with np.load(path) as part:
            out[lo, hi] = dict(part)
    return out


def responses(m, seed: int, rows: np.ndarray, block: int = 200):
    """(i, y) for each replicate number i in `rows` (sorted): simulated `block` consecutive
    replicates per call of simulated_responses, which compiles once per call (3 s for a part of
    20, 4 s for 200)."""
    for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
        for lo in range(0, len(run), block):
            chunk = run[lo : lo + block]
            yield from zip(chunk.tolist(), simulated_responses(m, seed, len(chunk), first=int(chunk[0])))


def check(m, dev: SparseDeviance, y: np.ndarray, theta: np.ndarray, lme4_start: bool, polish: bool) -> dict:
    """The report's checks of one replicate: the independent deviance at jaxmm's stored theta; where
    `lme4_start`, the refit from lme4's start (a third start, far from the generating theta); where
    `polish`, Newton from jaxmm's own theta (NaN where not asked)."""
    stats = dev.stats(y)
    f = lambda th: dev(th, stats)
    polished = newton(f, theta.copy())[:2] if polish else (np.nan, np.full(len(theta), np.nan))
    return {
        "at_stored": f(theta),
        "lme4_start": newton(f, m.initial_theta())[0] if lme4_start else np.nan,
        "polish_objective": polished[0],
        "polish_theta": polished[1],
    }


def checked_parts(
    args, both: list, rows: np.ndarray, theta: np.ndarray, lme4_start: np.ndarray, polish: np.ndarray
) -> dict:
    """check() of every replicate in `rows` (the parts `both`, jaxmm's stored `theta`), asking for
    the lme4 start and the polish where those masks say. Each part's checks are saved in --dir as
    check_{lo}_{hi}.npz and reused by later reports where they hold all that is asked, so a report
    only computes the parts that are new since the last."""
    directory = Path(args.dir)
    span = {b: slice(*np.searchsorted(rows, b)) for b in both}
    saved = _parts(directory, "check")
    missing = lambda values, asked: np.any(asked & np.isnan(values))
    todo = [
        b
        for b in both
        if b not in saved
        or missing(saved[b]["lme4_start"], lme4_start[span[b]])
        or missing(saved[b]["polish_objective"], polish[span[b]])
    ]
    if todo:
        m = model()
        dev = SparseDeviance(m)
        ends, total = {hi: (lo, hi) for lo, hi in todo}, sum(hi - lo for lo, hi in todo)
        fresh, start = {}, time.perf_counter()
        for i, y in responses(m, args.seed, np.concatenate([np.arange(*b) for b in todo])):
            k = int(np.searchsorted(rows, i))
            fresh[i] = check(m, dev, y, theta[k], lme4_start[k], polish[k])
            if i + 1 in ends:  # a part is whole: save it at once, so a report stopped midway loses little
                b = ends[i + 1]
                saved[b] = {key: np.array([fresh[j][key] for j in range(*b)]) for key in fresh[i]}
                np.savez(part_path(directory, "check", *b), **saved[b])
            if len(fresh) % 1000 == 0:
                print(f"checked {len(fresh)} of {total} replicates: {time.perf_counter() - start:.0f} s", flush=True)
    return {key: np.concatenate([saved[b][key] for b in both]) for key in saved[both[0]]}


def report(args) -> None:
    """Counts over the replicates both sides reached, into `--out` (the entry "insteval")."""
    directory = Path(args.dir)
    fits, refits = _parts(directory, "jaxmm"), _parts(directory, "refit")
    both = sorted(set(fits) & set(refits))
    overlapping = [(a, b) for a, b in zip(both, both[1:]) if b[0] < a[1]]
    if overlapping:  # parts of runs with different --first or --part: keep one of each pair
        raise SystemExit(f"parts overlap in {directory}: {overlapping}")
    rows = np.concatenate([np.arange(lo, hi) for lo, hi in both])
    r = {k: np.concatenate([fits[b][k] for b in both]) for k in ("objective", "theta", "converged", "niter")}
    best = {
        k: np.concatenate([refits[b][k] for b in both])
        for k in ("objective", "theta", "decrease", "iterations", "evaluations", "start")
    }
    rel = (r["objective"] - best["objective"]) / np.abs(best["objective"])
    unconverged = ~r["converged"]
    polish = (rel > TOLERANCE) | unconverged
    lme4_start = rows < args.lme4_start_subsample
    c = checked_parts(args, both, rows, r["theta"], lme4_start, polish)
    examined = {
        str(i): {
            "jaxmm_objective": float(r["objective"][k]),
            "refit_objective": float(best["objective"][k]),
            "polish_objective": float(c["polish_objective"][k]),
            "rel_jaxmm_minus_refit": float(rel[k]),
            "converged": bool(r["converged"][k]),
            "niter": int(r["niter"][k]),
            "jaxmm_theta": r["theta"][k].tolist(),
            "polish_theta": c["polish_theta"][k].tolist(),
        }
        for k, i in enumerate(rows)
        if polish[k]
    }
    at_stored, from_lme4_start = c["at_stored"], c["lme4_start"][lme4_start]
    stored_rel = np.abs(at_stored - r["objective"]) / np.abs(r["objective"])
    lme4_rel = (best["objective"][lme4_start] - from_lme4_start) / np.abs(
        from_lme4_start
    )  # > 0: lower from lme4's start
    seconds = lambda parts: float(sum(parts[b]["seconds"] for b in both))
    entry = {
        "formula": FORMULAS["insteval"],
        "nsamp": len(rows),
        "replicates": (
            f"{len(both)} parts of replicates {rows.min()}..{rows.max()} of parametricbootstrap({args.seed}, ., m)"
        ),
        "seed": args.seed,
        "ntheta": int(r["theta"].shape[1]),
        "refit": (
            "SparseDeviance (NumPy/SciPy) minimised by finite-difference Newton from the generating theta "
            "(and a boundary start where a theta_t < 0.01)"
        ),
        "bootstrap_s": seconds(fits),
        "refit_s": seconds(refits),
        "stored_objective_mismatch": int((stored_rel > 1e-10).sum()),
        "stored_objective_rel_max": float(stored_rel.max()),
        **audit_counts(rel, unconverged, TOLERANCE),
        "refit_predicted_decrease_max": float(best["decrease"].max()),
        "refit_iterations_max": int(best["iterations"].max()),
        "refit_evaluations_mean": float(best["evaluations"].mean()),
        "refit_found_by_boundary_start": int((best["start"] > 0).sum()),
        "singular_jaxmm": int(np.any(r["theta"] == 0.0, axis=1).sum()),
        "singular_refit_theta_below_1e-6": int(np.any(best["theta"] < 1e-6, axis=1).sum()),
        "theta_abs_difference_max": float(np.abs(r["theta"] - best["theta"]).max()),
        "lme4_start_subsample": {
            "n": len(from_lme4_start),
            "lower_than_refit_by_more_than_1e-9": int(np.sum(lme4_rel > 1e-9)),
            "max_rel_refit_minus_lme4_start": float(lme4_rel.max()) if len(lme4_rel) else None,
        },
        "examined": examined,
        "meta": {
            **run_meta({"report": load()}, CODE_VERSION),
            "parts_load": {
                side: [parts[b]["load"].tolist() for b in both[:: max(1, len(both) // 10)]]
                for side, parts in (("jaxmm", fits), ("refit", refits))
            },
        },
    }
    path = Path(args.out)
    out = json.loads(path.read_text())
    out["models"]["insteval"] = entry
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in entry.items() if k not in ("examined", "meta")}, indent=1))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["work", "report"])
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--last", type=int, default=10_000)
    ap.add_argument("--part", type=int, default=20, help="replicates per saved part (default 20)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dir", default="insteval_audit", help="where the parts are saved (default ./insteval_audit)")
    ap.add_argument("--out", default=str(RESULTS / "convergence_audit.json"))
    ap.add_argument(
        "--lme4-start-subsample",
        type=int,
        default=100,
        help="report: replicates also refitted from lme4's start (1 on the diagonal of each lambda)",
    )
    args = ap.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    {"work": work, "report": report}[args.task](args)


if __name__ == "__main__":
    main()
