"""Convergence audit: is every bootstrap replicate at the optimum of its own simulated response?

Run from the repository root (about 15 minutes on one core with the defaults):

    PYTHONPATH=. python bench/bench_convergence_audit.py [--nsamp 10000] [--seed 42] [--models ...]

For each shipped linear mixed model example, `jaxmm.parametricbootstrap(seed, nsamp, m)` is run,
and every replicate's response is simulated again, as the bootstrap does
(`simulate_response(replicate_key(key(seed), i), ...)` from the fitted β, σ, θ, in float64), and
refitted independently of jaxmm's solver, on the pure profiled deviance `jaxmm.deviance.objective`:
a batched saddle-free Newton method written here (see `Refit`), from several starts -- lme4's
start (1 on the diagonal of each λ, 0 below), the generating θ, the generating θ with one column
of λ set to 0 (one start per column: a boundary start, which finds the best singular fit on that
face). The refit objective is the lowest over the starts. Per replicate the script records

    rel = (jaxmm objective - refit objective) / refit objective

and counts replicates worse than the refit by more than 1e-6 relative (the audit's tolerance) and
by more than 1e-9, lower than the refit (by any amount, by more than 1e-9: where the refit would
have stopped short), and jaxmm's unconverged flags. Further checks: the objective jaxmm stores
equals the objective at the θ it stores (rtol 1e-10, which also shows the response was simulated
again exactly); the refit's own Newton decrement at its end point; a subsample refitted by a
second method, scipy's BFGS from the same starts; and for every replicate flagged unconverged or
worse than the refit, scipy's BFGS started at jaxmm's own θ (a polish: does jaxmm's end point lie
on a slope?). (scipy's L-BFGS-B with bounds θ_diag >= 0 was tried first and is no reference: from
an interior start its first projected step can land on θ = 0, where the gradient vanishes by
symmetry, and it stops there at an objective up to 1 % too high.)

The process runs on one CPU (see the note at `os.sched_setaffinity` below); to use another core
for a second run, start it under `taskset -c <cpu>`.

insteval (73,421 observations) is audited by bench/audit_insteval.py instead, in parts and on
two cores: its refit here (a batched Newton on jaxmm.deviance.objective) takes minutes per replicate.

Writes bench/results/convergence_audit.json -- each model's entry replaces that model's entry
of an earlier run and carries its own run record (`meta`) -- and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

# jaxlib's batched LAPACK kernels (the dense Cholesky factor and triangular solve inside
# jaxmm.deviance.objective for models with a dense part larger than 4: penicillin, pastes)
# split a large batch over XLA's intra-op thread pool and block their pool thread until the pieces
# are done. When every thread of the pool is blocked so at once (two such calls running
# concurrently, all a 2-core machine's pool holds), nothing is left to run the pieces: the process
# deadlocks at 0 % CPU (jaxlib 0.10.2; seen in penicillin's batched refit). With one schedulable CPU
# the pool has one thread, and then those kernels run every batch inline.
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import FORMULAS, RESULTS, audit_counts, code_version, load, run_meta  # noqa: E402

import jaxmm  # noqa: E402
from jaxmm.bootstrap import simulated_responses  # noqa: E402
from jaxmm.design import suffstats  # noqa: E402
from jaxmm.deviance import objective  # noqa: E402

CODE_VERSION = code_version()
TOLERANCE = 1e-6  # relative: a replicate's objective above the refit's by more is a failure
MODELS = ("dyestuff", "dyestuff2", "sleepstudy", "penicillin", "pastes")
NEWTON_ITERATIONS = 30  # at most
DECREASE_REL = 1e-14  # a Newton lane stops once its predicted decrease is below this, relative to the objective
STEP_SIZES = 2.0 ** -np.arange(
    0, 10
)  # the line search tries them in turn and takes the first that lowers the objective
CHUNK = 1024  # replicates refitted per compiled call, at most
CHUNK_BYTES = 2**30  # and fewer where the dense matrices a chunk works on at once would exceed this
SCIPY_OPTIONS = {"gtol": 1e-9, "maxiter": 2000}


class Refit:
    """Independent refits of simulated responses of model m, on the pure objective jaxmm.deviance.objective.

    The profiled deviance depends on lambda_t only through lambda_t lambda_t', so it is even in the
    sign of every column of lambda_t: minimised over all real theta (no bounds), a negative
    diagonal element is a sign flip away from a feasible point. Each replicate is refitted from
    several starts by a batched saddle-free Newton method (exact Hessian, eigenvalues replaced by
    their absolute values, a backtracking line search over STEP_SIZES; until the predicted decrease is
    negligible, at most NEWTON_ITERATIONS steps) --
    written here, sharing nothing with jaxmm's solver. A column of lambda at exactly 0 is a
    stationary point by symmetry, so a start with one column zeroed stays on that face and finds the
    best fit there (a singular optimum); the others find interior optima."""

    def __init__(self, m):
        self.m = m
        structure, reml = m.structure, m.REML
        with jax.enable_x64(True):
            self.mats = jax.tree.map(jnp.asarray, m.design.matrices)
            blocks = jax.tree.map(jnp.asarray, m.design.blocks)
        self.f = lambda th, st: objective(th, blocks, st, structure, reml)
        self.column = structure.column_diag  # theta component -> the diagonal element of its column
        generating = m.theta
        faces = [np.where(self.column == j, 0.0, generating) for j in np.unique(self.column)]
        self.starts = np.array([m.initial_theta(), generating, *faces])
        dense = structure.qrest + structure.p + 1
        lanes = 1 + len(generating)  # objective evaluations at once per replicate (the Hessian's)
        self.chunk = int(np.clip(CHUNK_BYTES // (8 * dense**2 * lanes), 1, CHUNK))
        self._newton = jax.jit(jax.vmap(self._newton_lane, in_axes=(None, 0)))
        self._objectives = jax.jit(jax.vmap(self.f))
        self._fg = jax.jit(jax.value_and_grad(self.f))

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        """Flip the sign of every column of lambda whose diagonal element is negative."""
        return theta * np.where(theta[..., self.column] < 0, -1.0, 1.0)

    def _newton_lane(self, theta0, stats):
        """Saddle-free Newton steps from theta0 until the predicted decrease (half the squared Newton
        decrement) is below DECREASE_REL of the objective, no step size lowers the objective, or
        NEWTON_ITERATIONS steps; returns the objective, theta and the Newton decrement there."""
        f = lambda th: self.f(th, stats)
        fg, hess = jax.value_and_grad(f), jax.hessian(f)
        steps = jnp.asarray(STEP_SIZES)

        def direction(theta):
            value, g = fg(theta)
            w, v = jnp.linalg.eigh(hess(theta))
            w = jnp.maximum(jnp.abs(w), 1e-10 * jnp.max(jnp.abs(w)) + 1e-14)
            gv = v.T @ g
            return value, -v @ (gv / w), jnp.sqrt(jnp.sum(gv**2 / w))

        def going(state):
            _, value, _, decrement, k, moved = state
            return (k < NEWTON_ITERATIONS) & moved & (decrement**2 / 2 > DECREASE_REL * jnp.abs(value))

        def step(state):
            theta, value, d, _, k, _ = state

            def higher(search):
                j, trial = search
                return (j < len(STEP_SIZES)) & ~(trial < value)

            def halve(search):
                j, _ = search
                trial = f(theta + steps[j] * d)
                return j + 1, jnp.where(jnp.isfinite(trial), trial, jnp.inf)

            j, trial = jax.lax.while_loop(higher, halve, (0, jnp.asarray(jnp.inf, value.dtype)))
            moved = trial < value
            theta = jnp.where(moved, theta + steps[j - 1] * d, theta)
            return (theta, *direction(theta), k + 1, moved)

        theta, value, _, decrement, _, _ = jax.lax.while_loop(going, step, (theta0, *direction(theta0), 0, True))
        return value, theta, decrement

    def responses(self, seed: int, nsamp: int) -> np.ndarray:
        """The responses of replicates 0..nsamp-1 of parametricbootstrap(seed, nsamp, m)."""
        return simulated_responses(self.m, seed, nsamp)

    def stats(self, ys: np.ndarray):
        with jax.enable_x64(True):
            return jax.tree.map(
                np.asarray, jax.jit(jax.vmap(lambda y: suffstats(self.mats, self.m.structure, y)))(jnp.asarray(ys))
            )

    def objectives(self, thetas: np.ndarray, stats) -> np.ndarray:
        """The objective at thetas[i] for response i, all at once."""
        with jax.enable_x64(True):
            return np.asarray(self._objectives(jnp.asarray(thetas), stats))

    def best(self, stats) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per response: the lowest objective over the starts, its (canonical) theta, which start
        found it, and that lane's final Newton decrement."""
        n = len(stats.yy)
        out = (np.empty(n), np.empty((n, len(self.m.lowerbd))), np.empty(n, dtype=int), np.empty(n))
        chunk = self.chunk
        with jax.enable_x64(True):
            starts = jnp.asarray(self.starts)
            for lo in range(0, n, chunk):
                rows = np.arange(min(chunk, n - lo))
                # every call gets `chunk` replicates (the last one padded by repeating), so one compile
                take = lo + np.resize(rows, chunk)
                part = jax.tree.map(lambda a, take=take: jnp.asarray(a[take]), stats)
                t = time.perf_counter()
                # one start after another: a vmapped while_loop runs until its slowest lane stops, so
                # each start's loop stops with its own slowest replicate (penicillin's 10,000: 51 s against 113 s)
                fits = [self._newton(start, part) for start in starts]
                values, thetas, decrements = (
                    np.stack([np.asarray(f[j])[rows] for f in fits], axis=1) for j in range(3)
                )  # (replicates, starts, ...)
                print(f"    refitted {lo + len(rows)}/{n} ({time.perf_counter() - t:.1f} s)", flush=True)
                k = np.argmin(values, axis=1)
                out[0][lo : lo + chunk] = values[rows, k]
                out[1][lo : lo + chunk] = self.canonical(thetas[rows, k])
                out[2][lo : lo + chunk] = k
                out[3][lo : lo + chunk] = decrements[rows, k]
        return out

    def scipy_fit(self, start: np.ndarray, stats_i) -> tuple[float, np.ndarray]:
        """scipy's BFGS from `start`, unconstrained as above: objective and canonical theta."""
        with jax.enable_x64(True):
            st = jax.tree.map(jnp.asarray, stats_i)

            def fg(th):
                f, g = self._fg(jnp.asarray(th), st)
                return float(f), np.asarray(g, dtype=np.float64)

            res = scipy.optimize.minimize(fg, start, jac=True, method="BFGS", options=SCIPY_OPTIONS)
        return float(res.fun), self.canonical(res.x)

    def scipy_best(self, stats_i) -> float:
        """A cross-check of `best` by another method: scipy's BFGS from the same starts."""
        return min(self.scipy_fit(s, stats_i)[0] for s in self.starts)


def audit(name: str, nsamp: int, seed: int, scipy_subsample: int) -> dict:
    m = jaxmm.fit(FORMULAS[name], jaxmm.dataset(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the unconverged count is recorded below
        start = time.perf_counter()
        samp = jaxmm.parametricbootstrap(seed, nsamp, m, progress=False)
        boot_s = time.perf_counter() - start
    r = samp.replicates
    refit = Refit(m)
    stats = refit.stats(refit.responses(seed, nsamp))
    at_stored_theta = refit.objectives(r.theta, stats)
    stored_mismatch = np.abs(at_stored_theta - r.objective) > 1e-10 * np.abs(r.objective)

    start = time.perf_counter()
    best, best_theta, best_start, decrement = refit.best(stats)
    refit_s = time.perf_counter() - start
    rel = (r.objective - best) / np.abs(best)
    worse = rel > TOLERANCE
    unconverged = ~r.converged
    one = lambda i: jax.tree.map(lambda a: a[i], stats)

    # scipy's BFGS on a subsample: does another method find anything lower than the Newton refit?
    start = time.perf_counter()
    sub = np.arange(min(scipy_subsample, nsamp))
    scipy_best = np.array([refit.scipy_best(one(i)) for i in sub])
    scipy_s = time.perf_counter() - start
    scipy_rel = (best[sub] - scipy_best) / np.abs(scipy_best)  # > 0: scipy found a lower point

    # A polish from jaxmm's own end point (scipy's BFGS), where it is unconverged or worse than the refit.
    examined = {}
    for i in np.flatnonzero(worse | unconverged):
        f, th = refit.scipy_fit(r.theta[i], one(i))
        examined[int(i)] = {
            "jaxmm_objective": float(r.objective[i]),
            "refit_objective": float(best[i]),
            "polish_objective": f,
            "rel_jaxmm_minus_refit": float(rel[i]),
            "rel_jaxmm_minus_polish": float((r.objective[i] - f) / abs(f)),
            "converged": bool(r.converged[i]),
            "niter": int(r.niter[i]),
            "jaxmm_theta": r.theta[i].tolist(),
            "refit_theta": best_theta[i].tolist(),
            "polish_theta": th.tolist(),
        }
    diag = m.lowerbd == 0.0
    return {
        "formula": FORMULAS[name],
        "nsamp": nsamp,
        "seed": seed,
        "ntheta": m.structure.ntheta,
        "starts": refit.starts.tolist(),
        "bootstrap_s": boot_s,
        "refit_s": refit_s,
        "refit_chunk": refit.chunk,
        "stored_objective_mismatch": int(stored_mismatch.sum()),
        **audit_counts(rel, unconverged, TOLERANCE),
        "refit_newton_decrement_max": float(decrement.max()),
        "refit_newton_decrement_above_1e-6": int((decrement > 1e-6).sum()),
        "singular_jaxmm": int(samp.issingular().sum()),
        "singular_refit_theta_below_1e-6": int(np.any(best_theta[:, diag] < 1e-6, axis=1).sum()),
        "refit_found_by_start": np.bincount(best_start, minlength=len(refit.starts)).tolist(),
        "scipy_subsample": {
            "n": len(sub),
            "seconds": scipy_s,
            "scipy_lower_than_refit_by_more_than_1e-9": int((scipy_rel > 1e-9).sum()),
            "max_rel_refit_minus_scipy": float(scipy_rel.max()) if len(sub) else None,
            "jaxmm_worse_than_scipy_by_more_than_1e-6": int(
                ((r.objective[sub] - scipy_best) / np.abs(scipy_best) > TOLERANCE).sum()
            ),
        },
        "examined": examined,
        "lowest_rel": {
            str(int(i)): {
                "rel": float(rel[i]),
                "jaxmm_theta": r.theta[i].tolist(),
                "refit_theta": best_theta[i].tolist(),
            }
            for i in np.argsort(rel)[:5]
        },
        "highest_rel": {
            str(int(i)): {
                "rel": float(rel[i]),
                "jaxmm_theta": r.theta[i].tolist(),
                "refit_theta": best_theta[i].tolist(),
            }
            for i in np.argsort(rel)[-5:]
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsamp", type=int, default=10_000, help="replicates per model (default 10,000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--scipy-subsample", type=int, default=200, help="replicates also refitted by scipy's BFGS (default 200)"
    )
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", default=str(RESULTS / "convergence_audit.json"))
    args = ap.parse_args()

    results = {}
    for name in args.models:
        start_load = load()
        print(f"{name}: {args.nsamp} replicates ...", flush=True)
        results[name] = audit(name, args.nsamp, args.seed, args.scipy_subsample)
        results[name]["meta"] = {
            **run_meta({"start": start_load, "end": load()}, CODE_VERSION),
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
        }
    path = Path(args.out)
    earlier = json.loads(path.read_text())["models"] if path.exists() else {}
    out = {
        "tolerance_rel": TOLERANCE,
        "newton_iterations": NEWTON_ITERATIONS,
        "newton_decrease_rel": DECREASE_REL,
        "scipy_options": SCIPY_OPTIONS,
        "models": {**earlier, **results},
    }
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False))

    print(
        "\n| model | replicates | worse than refit by > 1e-6 rel | unconverged (flagged) "
        "| unconverged but within 1e-6 | "
        "lower than refit (any / > 1e-9 rel) | median rel. difference | stored objective ≠ objective(stored θ) | "
        "singular (jaxmm θ = 0 / refit θ < 1e-6) | refit time (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['nsamp']:,} | {r['worse_than_refit_by_more_than_1e-6']} | {r['unconverged']} | "
            f"{r['unconverged_and_within_1e-6']} | {r['lower_than_refit']} / "
            f"{r['lower_than_refit_by_more_than_1e-9']} | "
            f"{r['rel_quantiles']['50%']:.1e} | {r['stored_objective_mismatch']} | "
            f"{r['singular_jaxmm']} / {r['singular_refit_theta_below_1e-6']} | {r['refit_s']:.0f} |"
        )
    for name, r in results.items():
        for i, e in r["examined"].items():
            print(
                f"{name} replicate {i}: converged={e['converged']} niter={e['niter']} "
                f"rel(jaxmm - refit)={e['rel_jaxmm_minus_refit']:.2e} "
                f"rel(jaxmm - polish)={e['rel_jaxmm_minus_polish']:.2e} "
                f"θ jaxmm {np.round(e['jaxmm_theta'], 5).tolist()} refit {np.round(e['refit_theta'], 5).tolist()}"
            )
    print(f"jaxmm code: {CODE_VERSION}\nwrote {args.out}")


if __name__ == "__main__":
    main()
