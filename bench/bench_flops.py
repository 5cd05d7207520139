"""Floating-point work of jaxmm's LMM bootstrap kernels against this machine's attainable GFLOP/s (issue 24).

    PYTHONPATH=. python bench/bench_flops.py                         # ~6-8 min on 2 shared cores
    PYTHONPATH=. python bench/bench_flops.py --models sleepstudy,penicillin --reps 1000

Everything is computed from the code that runs (the kernels may change): for each model,

1. Work per solver iteration, counted on the jaxpr of the functions the bootstrap runs (`count_flops`: a
   dot_general of an (M x K) by (K x N) product is 2 M N K; an elementwise arithmetic operation or a reduction
   1 per element; a scatter-add (segment sums) 1 per update; LAPACK's Cholesky n^3/3 and triangular solves
   n^2 m; a scan's body times its length; a while loop's body once, which is why one solver step is counted
   by itself; transcendental functions (exp, log) are counted apart, as XLA does). Counted:
     - `step`: one iteration of the bootstrap lanes' solver (jaxmm.solver.step, exact=False: objective and
       gradient, BFGS update and the damped Newton step), on the lane's objective;
     - `value_grad_hess`: objective + gradient + exact Hessian (jaxmm.solver._value_grad_hess, the Newton
       iteration of a single fit);
     - `objective`, `value_and_grad`: the objective alone, with its gradient;
     - `round_overhead`: what a lane does once per kernel call besides its iterations (simulate y, its
       sufficient statistics, finish, the result): one lane's call (`lanes.simulate` + `lanes.fit`, the while
       loop's body counted once) minus one `step`.
   XLA's own figure (`jax.jit(f).lower(...).compile().cost_analysis()["flops"]`) is recorded beside each
   count: it is populated on this CPU, but it counts a loop's body once (jaxmm.linalg's looped Cholesky and
   solves of moderate size are loops) and LAPACK custom calls (dense factors above jaxmm.linalg.LOOP_MAX)
   as 0, so it is a lower bound; where a kernel has neither, the two agree to within XLA's simplifications.
2. Iterations per replicate: `parametricbootstrap`'s `replicates.niter` (mean), and the kernel calls
   ("rounds", ROUND_MAXITER iterations at most each) per replicate: ceil(niter / ROUND_MAXITER).
   useful flops / replicate = rounds x round_overhead + niter x step.
   Lanes side by side (vmap) run every call until its slowest lane is done: with full lanes a call runs
   ROUND_MAXITER iterations for every lane, so executed flops / replicate ~= rounds x (round_overhead +
   ROUND_MAXITER x step); lanes one at a time (lax.map, LAPACK models) execute only their own iterations.
3. Seconds per replicate: the best of --repeats warm `parametricbootstrap(seed, nsamp, m)` runs (one untimed
   run of the same nsamp compiles first).
4. This machine's attainable GFLOP/s (float64): numpy and jax matmuls of 512 x 512 and 128 x 128, batched
   small matmuls (jax vmap of 8 x 8 and 4 x 4 products, the size of the kernels' blocks), and an elementwise
   multiply-add on 1e6 and 1e4 values; best of 5. The peak is the largest.
   fraction reached = (useful flops / replicate) / (seconds / replicate) / peak.

It reads two private names of jaxmm, `LmmLanes._stats` (a response's sufficient statistics) and
`solver._value_grad_hess`, besides the lane protocol (jaxmm/lanes.py): if a kernel change renames them,
change them here.

Models (ML): sleepstudy, penicillin, pastes, kb07_zerocorr and kb07_maximal (bench_ddf.kb07_like(), 56
subjects x 32 items, (1 + spkr + prec + load || / | subj) + (... || / | item)) and insteval
`y ~ 1 + service + (1|s) + (1|d) + (1|dept)`. Writes bench/results/flops.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from functools import partial
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import RESULTS, code_version, load, run_meta
from bench_ddf import kb07_like

import jaxmm
from jaxmm.bootstrap import ROUND_MAXITER, lane_width

BARS = "(1 + spkr + prec + load{bar}subj) + (1 + spkr + prec + load{bar}item)"
# name: (formula, data set, default nsamp, default timed repeats)
MODELS = {
    "sleepstudy": ("reaction ~ 1 + days + (1 + days|subj)", "sleepstudy", 2000, 3),
    "penicillin": ("diameter ~ 1 + (1|plate) + (1|sample)", "penicillin", 2000, 3),
    "pastes": ("strength ~ 1 + (1|batch/cask)", "pastes", 2000, 3),
    "kb07_zerocorr": ("rt ~ 1 + spkr + prec + load + " + BARS.format(bar=" || "), "kb07_like", 128, 2),
    "kb07_maximal": ("rt ~ 1 + spkr + prec + load + " + BARS.format(bar=" | "), "kb07_like", 128, 2),
    "insteval": ("y ~ 1 + service + (1|s) + (1|d) + (1|dept)", "insteval", 16, 1),
}

TRANSCENDENTAL = {"exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "erf_inv", "pow"}
TRANSCENDENTAL |= {"sin", "cos", "tan", "atan2", "lgamma", "digamma", "cbrt"}
ELEMENTWISE = {"add", "add_any", "sub", "mul", "div", "neg", "max", "min", "abs", "sqrt", "rsqrt", "integer_pow"}
ELEMENTWISE |= {"square", "sign", "rem", "reciprocal", "lt", "le", "gt", "ge", "eq", "ne", "is_finite", "nextafter"}
REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "cumsum", "cummax"}
REDUCTIONS |= {"cumprod", "cummin", "cumlogsumexp", "reduce_precision"}
SCATTERS = {"scatter-add", "scatter_add", "scatter-mul", "scatter_mul"}
SUBJAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _size(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64)) if hasattr(aval, "shape") else 1


def _floating(aval) -> bool:
    try:
        return np.issubdtype(aval.dtype, np.floating)
    except (AttributeError, TypeError):  # a PRNG key, a token
        return False


def count_flops(jaxpr, times: float = 1.0, acc: dict | None = None) -> dict:
    """Floating-point work of a (closed) jaxpr by category (see the module docstring)."""
    acc = acc if acc is not None else dict.fromkeys(("dot", "elementwise", "reduce", "scatter", "linalg"), 0.0)
    for key in ("transcendental", "gather_elements", "scatter_elements", "while_loops", "unknown_primitives"):
        acc.setdefault(key, 0.0)
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        outs = [v.aval for v in eqn.outvars]
        ins = [v.aval for v in eqn.invars]
        if name == "scan":
            count_flops(eqn.params["jaxpr"], times * eqn.params["length"], acc)
        elif name == "while":
            acc["while_loops"] += times
            count_flops(eqn.params["cond_jaxpr"], times, acc)
            count_flops(eqn.params["body_jaxpr"], times, acc)
        elif name == "cond":
            branches = [count_flops(b, times) for b in eqn.params["branches"]]
            heaviest = max(
                branches, key=lambda c: sum(c[k] for k in ("dot", "elementwise", "reduce", "scatter", "linalg"))
            )
            for k, v in heaviest.items():
                if isinstance(v, float):
                    acc[k] += v
        elif any(p in eqn.params for p in SUBJAXPR_PARAMS):
            sub = next(eqn.params[p] for p in SUBJAXPR_PARAMS if p in eqn.params)
            count_flops(sub, times, acc)
        elif name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            k = int(np.prod([ins[0].shape[d] for d in contract], dtype=np.int64))
            acc["dot"] += times * 2.0 * _size(outs[0]) * k
        elif name == "cholesky":
            n, batch = ins[0].shape[-1], _size(ins[0]) // (ins[0].shape[-1] ** 2)
            acc["linalg"] += times * batch * n**3 / 3.0
        elif name == "triangular_solve":
            n, b = ins[0].shape[-1], ins[1]
            acc["linalg"] += times * (_size(b) / n) * n * n
        elif name in ("lu", "lu_pivots_to_permutation"):
            n = ins[0].shape[-1]
            acc["linalg"] += times * (_size(ins[0]) // (n * n)) * 2.0 * n**3 / 3.0 if name == "lu" else 0.0
        elif name in ("eigh", "svd", "qr", "householder_product", "geqrf"):
            n = ins[0].shape[-1]
            acc["linalg"] += times * (_size(ins[0]) // (n * n)) * 9.0 * n**3
        elif not outs or not _floating(outs[0]):
            if name == "gather":
                acc["gather_elements"] += times * _size(outs[0])
            continue
        elif name in TRANSCENDENTAL:
            acc["transcendental"] += times * _size(outs[0])
        elif name in ELEMENTWISE:
            acc["elementwise"] += times * _size(outs[0])
        elif name in REDUCTIONS:
            acc["reduce"] += times * _size(ins[0])
        elif name in SCATTERS:
            acc["scatter"] += times * _size(ins[2])
            acc["scatter_elements"] += times * _size(ins[2])
        elif name == "gather":
            acc["gather_elements"] += times * _size(outs[0])
        elif name in ("select_n", "clamp") or name.startswith(
            ("broadcast", "reshape", "transpose", "slice", "dynamic", "concatenate", "pad", "squeeze", "expand")
        ):
            continue
        elif name in ("convert_element_type", "iota", "copy", "copy_p", "rev", "sort", "stop_gradient", "scatter"):
            continue
        elif name in ("split", "stack", "unstack", "bitcast_convert_type", "optimization_barrier"):
            continue
        elif name in ("random_bits", "random_wrap", "random_unwrap", "random_seed", "threefry2x32", "erf_inv"):
            continue
        else:
            acc["unknown_primitives"] += times * _size(outs[0])
            acc.setdefault("unknown_names", []).append(name) if name not in acc.get("unknown_names", []) else None
    return acc


def total(c: dict) -> float:
    return c["dot"] + c["elementwise"] + c["reduce"] + c["scatter"] + c["linalg"]


def counted(f, *args) -> dict:
    """count_flops of f's jaxpr at args, and XLA's cost analysis of its compiled program."""
    import jax

    c = count_flops(jax.make_jaxpr(f)(*args))
    c["flops"] = total(c)
    c["unknown_names"] = sorted(c.get("unknown_names", []))
    try:
        cost = jax.jit(f).lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        c["xla_flops"] = float(cost.get("flops", float("nan")))
        c["xla_transcendentals"] = float(cost.get("transcendentals", float("nan")))
        c["xla_bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
    except Exception as e:  # XLA's figure is a cross-check only
        c["xla_error"] = f"{type(e).__name__}: {e}"
    return c


def data(name: str):
    return kb07_like() if name == "kb07_like" else jaxmm.dataset(name)


def kernel_counts(m) -> dict:
    """Work of one lane's solver step, Newton evaluation, objective and per-call overhead (see the docstring)."""
    import jax
    import jax.numpy as jnp

    from jaxmm import solver
    from jaxmm._compile import computing
    from jaxmm.deviance import objective

    with computing():
        lanes, structure = m.lanes(), m.structure
        target = m.refit_target(None, np.dtype(np.float64))
        sim = m.simulation(m.simulation_parameters(), use_u=False)
        refit = target.refit
        state = jax.tree.map(jnp.asarray, target.start)
        opts = solver.solver_options(None)
        key = jax.random.PRNGKey(0)
        y = lanes.simulate(key, sim)
        stats = lanes._stats(y, refit, np.dtype(np.float64))
        column_diag = structure.column_diag

        def fun_of(stats):
            return partial(objective, blocks=refit.blocks, stats=stats, structure=structure, reml=refit.reml)

        def step(state, stats):
            return solver.step(fun_of(stats), state, column_diag, opts, exact=False)

        def vgh(theta, stats):
            return solver._value_grad_hess(fun_of(stats), theta)

        def value(theta, stats):
            return fun_of(stats)(theta)

        def value_and_grad(theta, stats):
            return jax.value_and_grad(fun_of(stats))(theta)

        def one_call(key, state):
            y = lanes.simulate(key, sim)
            return lanes.fit(y, refit, state, opts, state.niter + ROUND_MAXITER)

        out = {
            "step": counted(step, state, stats),
            "value_grad_hess": counted(vgh, state.theta, stats),
            "objective": counted(value, state.theta, stats),
            "value_and_grad": counted(value_and_grad, state.theta, stats),
            "one_call": counted(one_call, key, state),
        }
    keys = ("dot", "elementwise", "reduce", "scatter", "linalg", "flops")
    out["round_overhead"] = {k: out["one_call"][k] - out["step"][k] for k in keys}
    return out


def structure_summary(m) -> dict:
    s, blocks = m.structure, m.design.blocks
    t1 = s.terms[0]
    return {
        "n": int(s.n),
        "p": int(s.p),
        "m1": int(t1.nlevels),
        "k1": int(t1.k),
        "qr": int(s.qrest),
        "d_dense": int(s.qrest + s.p + 1),
        "z1zr_dense": bool(getattr(blocks, "dense_z1zr", False)),
        "pairs": int(len(getattr(blocks, "pair_level", ()))),
        "vectorised_lanes": bool(m.lanes().vectorised),
    }


def time_bootstrap(m, nsamp: int, repeats: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jaxmm.parametricbootstrap(1, nsamp, m, progress=False)
        times, niter = [], None
        for seed in range(2, 2 + repeats):
            t = time.perf_counter()
            samp = jaxmm.parametricbootstrap(seed, nsamp, m, progress=False)
            times.append(time.perf_counter() - t)
            niter = np.asarray(samp.replicates.niter, dtype=float)
    rounds = np.ceil(np.maximum(niter, 1) / ROUND_MAXITER)
    return {
        "nsamp": nsamp,
        "times_s": times,
        "s_per_replicate": min(times) / nsamp,
        "mean_niter": float(niter.mean()),
        "max_niter": float(niter.max()),
        "mean_rounds": float(rounds.mean()),
    }


def _best(f, repeats: int = 5) -> float:
    f()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def machine_gflops() -> dict:
    """Attainable float64 GFLOP/s of a few kernels like the bootstrap's (best of 5). Each jax kernel is a
    chain of 20 dependent products (c <- (c @ a) * s), so XLA cannot hoist them out of the loop."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    out = {}
    with jax.enable_x64(True):
        for n, reps in ((512, 4), (128, 200)):
            a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
            seconds = _best(lambda a=a, b=b, r=reps: [a @ b for _ in range(r)])
            out[f"numpy matmul {n}x{n}"] = 2 * n**3 * reps / seconds / 1e9
            ja = jnp.asarray(a) / np.sqrt(n)
            mm = jax.jit(lambda a, r=reps: jax.lax.fori_loop(0, r, lambda i, c: (c @ a) * 0.5, a))
            seconds = _best(lambda f=mm, a=ja: f(a).block_until_ready())
            out[f"jax matmul {n}x{n}"] = 2 * n**3 * reps / seconds / 1e9
        for k, batch in ((8, 4096), (4, 16384)):
            a = jnp.asarray(rng.standard_normal((batch, k, k))) / np.sqrt(k)
            bmm = jax.jit(lambda a: jax.lax.fori_loop(0, 20, lambda i, c: jnp.einsum("bij,bjk->bik", c, a) * 0.5, a))
            seconds = _best(lambda f=bmm, a=a: f(a).block_until_ready())
            out[f"jax batched matmul {batch} x ({k}x{k})"] = 2 * k**3 * batch * 20 / seconds / 1e9
        for size, reps in ((1_000_000, 20), (10_000, 2000)):  # from memory, and within the L1/L2 caches
            x = jnp.asarray(rng.standard_normal(size))
            fma = jax.jit(lambda x, r=reps: jax.lax.fori_loop(0, r, lambda i, c: c * 0.999 + x, x))
            seconds = _best(lambda f=fma, x=x: f(x).block_until_ready())
            out[f"jax elementwise multiply-add {size:.0e}"] = 2 * size * reps / seconds / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    ap.add_argument("--reps", type=int, help="replicates per timed bootstrap, every model (default: per model)")
    ap.add_argument("--repeats", type=int, help="timed bootstraps per model, the best counts (default: per model)")
    ap.add_argument("--out", default=str(RESULTS / "flops.json"))
    args = ap.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if set(names) - set(MODELS):
        ap.error(f"unknown models {sorted(set(names) - set(MODELS))}; known: {', '.join(MODELS)}")
    version, loads, started = code_version(), {"start": load()}, time.strftime("%Y-%m-%d %H:%M:%S %Z")

    loads["machine"] = load()
    machine = machine_gflops()
    peak_name = max(machine, key=machine.get)
    peak = machine[peak_name]
    print("attainable GFLOP/s:", {k: round(v, 2) for k, v in machine.items()}, flush=True)

    rows = {}
    for name in names:
        formula, dname, nsamp, repeats = MODELS[name]
        loads[name] = load()
        m = jaxmm.fit(formula, data(dname), REML=False)
        width = lane_width(m, "cpu")
        row = {"formula": formula, "lane_width": width, **structure_summary(m)}
        t = time.perf_counter()
        row["counts"] = kernel_counts(m)
        row["count_s"] = time.perf_counter() - t
        row["bootstrap"] = time_bootstrap(m, args.reps or max(nsamp, width), args.repeats or repeats)
        c, b = row["counts"], row["bootstrap"]
        step, over = c["step"]["flops"], c["round_overhead"]["flops"]
        useful = b["mean_rounds"] * over + b["mean_niter"] * step
        executed = b["mean_rounds"] * (over + ROUND_MAXITER * step) if row["vectorised_lanes"] else useful
        gflops = useful / b["s_per_replicate"] / 1e9
        row.update(
            useful_flops_per_replicate=useful,
            executed_flops_per_replicate_estimate=executed,
            lane_efficiency_estimate=useful / executed,
            achieved_gflops=gflops,
            fraction_of_peak=gflops / peak,
            executed_gflops_estimate=executed / b["s_per_replicate"] / 1e9,
        )
        rows[name] = row
        print(
            f"{name}: step {step:.3g} flops, vgh {c['value_grad_hess']['flops']:.3g}, niter {b['mean_niter']:.2f}, "
            f"{1e3 * b['s_per_replicate']:.4f} ms/rep, {gflops:.3g} GFLOP/s ({100 * gflops / peak:.2g} % of peak)",
            flush=True,
        )
        del m
    loads["end"] = load()

    print()
    print(
        "| model | m1 x k1, qr, p (dense d) | lanes | flops / step (XLA) | flops / Newton eval (XLA) | "
        "round overhead | niter (rounds) | useful flops / rep | ms / rep | GFLOP/s | % of peak | lane eff. |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        c, b = r["counts"], r["bootstrap"]
        print(
            f"| {name} | {r['m1']} x {r['k1']}, {r['qr']}, {r['p']} ({r['d_dense']}) | "
            f"{'vmap' if r['vectorised_lanes'] else 'one at a time'} {r['lane_width']} | "
            f"{c['step']['flops']:.3g} ({c['step'].get('xla_flops', float('nan')):.3g}) | "
            f"{c['value_grad_hess']['flops']:.3g} ({c['value_grad_hess'].get('xla_flops', float('nan')):.3g}) | "
            f"{c['round_overhead']['flops']:.3g} | {b['mean_niter']:.2f} ({b['mean_rounds']:.2f}) | "
            f"{r['useful_flops_per_replicate']:.3g} | {1e3 * b['s_per_replicate']:.4g} | {r['achieved_gflops']:.3g} | "
            f"{100 * r['fraction_of_peak']:.2g} | {r['lane_efficiency_estimate']:.2f} |"
        )
    meta = run_meta(loads, version)
    meta["started"] = started
    result = {"run": meta, "args": vars(args), "machine_gflops": machine, "peak": {peak_name: peak}, "models": rows}
    Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
