"""The bootstrap engine: simulate and refit replicates in lanes of one compiled kernel, refilling
lanes as their replicates finish, over the local devices and processes.

It knows no kind of model: each model provides the lane protocol of jaxmm/lanes.py (simulate a
response, fit it from a solver state, extract a replicate's fit), and the engine schedules lanes.

Rounds. A vmapped while-loop runs until its slowest lane finishes, so each kernel call runs at most
`ROUND_MAXITER` solver iterations per fit and returns every lane's solver state. A fit that is done
is stored and its lane closed; one that is not continues in the next call from its state (point,
BFGS Hessian, damping), as if never interrupted. A lane whose replicate has no open fit left is
refilled with the next replicate. So no call waits for a slow lane, and every call has the same
shape: one compilation, loaded on each device. The states stay on the device from call to call; a call takes
the lanes' replicates and which of them are new or still open, and hands back one row of numbers
per lane and model (a small model's call takes milliseconds: a transfer per field would be a
good part of it).

Scale-out: a batch is a sequence of kernel calls of a fixed number of lanes, and the calls take
the local devices in turn; JAX dispatches them asynchronously, so the devices run side by side.
Every device runs the same one-device program. (A program partitioned over N devices with
shard_map is optimised differently by XLA -- on a CPU its results differ from one device's in the
last bits -- so it is not used: a replicate's numbers must not depend on the device count.) When
JAX runs as several processes (`jax.distributed.initialize()`), each process fits a contiguous
share of the replicates and the shares are gathered (`process_allgather`), so every process
returns the whole table. Replicate i's random numbers depend on (key, i) alone, and its fitted
numbers are bit-identical for any nsamp, batch_size, number of devices or of processes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.experimental import multihost_utils

from .._compile import compile_clock, jit
from ..design import Structure
from ..lanes import FitResult, Lanes, Target
from ..replicates import Replicates
from ..solver import SolverOptions, SolverState

ROUND_MAXITER = 8
_CPU_MEMORY_BUDGET = 2 * 1024**3  # bytes a batch may use on a CPU, roughly
# On a CPU, lanes whose working set stays within about this many bytes run fastest (measured on
# sleepstudy, 10,000 replicates: 128 lanes 0.63 s, 1024 lanes 1.67 s; dyestuff: flat from 256 up).
_CPU_CACHE_BUDGET = 2 * 1024**2


def replicate_key(key: Array, index: Array) -> Array:
    """The key of replicate `index` (0-based) of a run seeded with `key`."""
    return jax.random.fold_in(key, index)


# A replicate's fit as the kernel returns it: one row in the fit's precision (the fields Replicates stores,
# then whether the fit is done; the flags and iteration counts are exact in float32 up to 2^24), so that a
# call hands back one array per target, not one per field
_ROW_SCALARS = ("objective", "sigma", "converged", "niter")
_ROW_VECTORS = ("theta", "beta", "stderror")


def _fit_row(fit: FitResult, done: Array) -> Array:
    parts = [jnp.ravel(getattr(fit, name)) for name in (*_ROW_SCALARS, *_ROW_VECTORS)] + [jnp.ravel(done)]
    return jnp.concatenate([part.astype(fit.theta.dtype) for part in parts])


def _split_rows(rows: np.ndarray, ntheta: int, p: int) -> tuple[FitResult, np.ndarray]:
    """The fields of `_fit_row`s (one row per lane; theta has ntheta values, beta and stderror p) and the done
    flags."""
    fields = {name: rows[:, k] for k, name in enumerate(_ROW_SCALARS)}
    ends = np.cumsum((len(_ROW_SCALARS), ntheta, p, p))
    fields.update({name: rows[:, a:b] for name, a, b in zip(_ROW_VECTORS, ends[:-1], ends[1:])})
    fields["converged"] = fields["converged"] != 0.0
    return FitResult(**fields, hessian=None), rows[:, -1] != 0.0


def _take(tree, rows):
    return jax.tree.map(lambda a: a[rows], tree)


def _select(flag: Array, new, old):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


@partial(jit, static_argnames=("structure", "simulator", "fitters", "opts", "statistic"))
def _fit_replicates(
    key: Array,
    indices: Array,
    fresh: Array,
    open_: Array,
    states: tuple[SolverState, ...],
    simulation: Any,
    refits: tuple[Any, ...],
    starts: tuple[SolverState, ...],
    structure: Structure,
    simulator: Lanes,
    fitters: tuple[Lanes, ...],
    opts: SolverOptions,
    statistic: Callable | None,
) -> tuple[tuple[Array, ...], tuple[SolverState, ...], Array | None]:
    """Simulate replicates `indices` (by `simulator`, from `simulation`) and fit each to every model
    of `refits` (by `fitters`), each fit continuing from its lane's solver state for at most
    ROUND_MAXITER iterations; with `statistic`, also statistic(ReplicateFit) of the first model's
    fit. A lane that is `fresh` starts every fit from `starts`; a fit that is not open (open_:
    targets x lanes) keeps its state. Returns per target the lanes' `_fit_row`s and solver states.
    Runs on the device its arguments are on. `structure`, the simulating model's, chooses the
    compiler options (see _compile.jit)."""

    def one(i, restart, live, lane_states):
        y = simulator.simulate(replicate_key(key, i), simulation)
        lane_states = tuple(_select(restart, start, s) for start, s in zip(starts, lane_states))
        out = [f.fit(y, r, s, opts, s.niter + ROUND_MAXITER) for f, r, s in zip(fitters, refits, lane_states)]
        rows = tuple(_fit_row(fit, state.done) for fit, state in out)
        new_states = tuple(_select(flag, state, s) for flag, (_, state), s in zip(live, out, lane_states))
        if statistic is None:
            return rows, new_states, None
        return rows, new_states, statistic(fitters[0].replicate_fit(y, refits[0], out[0][0]))

    lanes = (indices, fresh, open_.T, states)
    if all(f.vectorised for f in (simulator, *fitters)):
        return jax.vmap(one)(*lanes)
    return lax.map(lambda lane: one(*lane), lanes)


@dataclass
class LanePool:
    """The lanes in flight: the replicate each holds (its position in the run's list; -1 idle), whether
    its fit to each target is still open, and whether it was refilled since the last call (its fits
    then start afresh). The lanes' solver states stay on the devices, between the kernel's calls."""

    replicate: np.ndarray  # (batch,)
    open: np.ndarray  # (targets, batch) bool
    fresh: np.ndarray  # (batch,) bool

    @classmethod
    def idle(cls, batch: int, targets: int) -> LanePool:
        return cls(np.full(batch, -1), np.zeros((targets, batch), dtype=bool), np.zeros(batch, dtype=bool))

    def refill(self, upcoming: int, remaining: int, usable: np.ndarray) -> int:
        """Give idle `usable` lanes the next replicates, from position `upcoming`; returns how many."""
        fresh = np.flatnonzero((self.replicate < 0) & usable)[:remaining]
        self.replicate[fresh] = np.arange(upcoming, upcoming + len(fresh))
        self.open[:, fresh] = True
        self.fresh[fresh] = True
        return len(fresh)

    def update(self, j: int, done: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """Close target j's open fits that are `done` (a flag for each of `lanes`); returns their positions in
        `lanes`."""
        finished = self.open[j, lanes] & done
        self.open[j, lanes[finished]] = False
        return np.flatnonzero(finished)

    def release(self) -> np.ndarray:
        """Mark lanes whose replicate has no open fit left as idle; returns those replicates' positions."""
        complete = (self.replicate >= 0) & ~self.open.any(axis=0)
        positions = self.replicate[complete].copy()
        self.replicate[complete] = -1
        return positions


def run(
    key: Array,
    replicates: np.ndarray,
    simulator: Lanes,
    simulation: Any,
    targets: list[Target],
    opts: SolverOptions,
    lanes_shape: tuple[int, int],
    devices: list,
    progress: bool,
    statistic: Callable | None,
    finished: Callable[[np.ndarray, list[Replicates], np.ndarray | None], None] | None = None,
    lazy: bool = False,
) -> tuple[list[Replicates], np.ndarray | None]:
    """Fit `replicates` (replicate numbers; row j of the results is replicates[j]), simulated by
    `simulator` from `simulation`, to every target through one compiled batch shape, refilling the
    lanes as replicates finish (see the module docstring). After each call, `finished(rows, outs,
    statistic)` is told the rows whose replicate has no open fit left.

    The `batch` lanes, lanes_shape = (batch, call_lanes), go through the kernel `call_lanes` at a
    time, the calls taking the devices in turn (JAX runs them side by side): every call runs the
    same one-device program, so a replicate's numbers depend neither on the batch size nor on the
    number of devices. `lazy`: the first device starts alone, and the others join once they have loaded the
    kernel's executable, in a thread, while the first device goes on: at once where it is at hand (stored, or
    loaded by this process), a load beside the first device's own; else (the first device compiles it) only
    where the rest of the run, as the first round predicts it, would take longer on the first device alone
    than their loads (`_others_repay_their_start`), so that a short run pays no other device's start. (The
    thread only loads: tracing and compiling depend on the calling thread's JAX settings.)"""
    from tqdm.auto import tqdm

    batch, call_lanes = lanes_shape
    starts = tuple(t.start for t in targets)
    shared = [jax.device_put((key, simulation, tuple(t.refit for t in targets), starts), d) for d in devices]
    # every call's lanes start done (idle): a state that takes no iteration until its lane is refilled
    waiting = tuple(jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], call_lanes, axis=0), s) for s in starts)
    waiting = tuple(s._replace(done=np.ones(call_lanes, dtype=bool)) for s in waiting)
    parts = [slice(c, c + call_lanes) for c in range(0, batch, call_lanes)]
    states = [jax.device_put(waiting, devices[j % len(devices)]) for j in range(len(parts))]
    fitters = tuple(t.lanes for t in targets)
    outs = [Replicates.empty(len(replicates), t.model) for t in targets]
    sizes = [(t.model.structure.ntheta, int(np.sum(t.model.design.estimable))) for t in targets]
    stat_out = None
    pool = LanePool.idle(batch, len(targets))
    upcoming = 0
    in_use = 1 if lazy else len(devices)
    first_round = True

    def arguments(j: int, part: slice) -> tuple[tuple, dict]:
        """The kernel's arguments for lanes `part`, on the device of its states."""
        key, simulation, refits, starts = shared[j % len(devices)]
        indices = replicates[np.maximum(pool.replicate[part], 0)]
        fresh = pool.fresh[part].copy()  # copies: a CPU device may read a NumPy array's memory when the call runs
        args = (key, indices, fresh, pool.open[:, part].copy(), states[j], simulation, refits, starts)
        return args, dict(
            structure=simulator.structure, simulator=simulator, fitters=fitters, opts=opts, statistic=statistic
        )

    kernels: dict[int, Callable] = {}  # by device: the kernel's executable (`_compile.jit`)

    def call(j: int, part: slice):
        """The kernel on lanes `part`, dispatched asynchronously to the device of its states."""
        args, kwargs = arguments(j, part)
        device = j % len(devices)
        if device not in kernels:
            kernels[device] = _fit_replicates.executable(*args, **kwargs)
        return kernels[device](*args)

    def loads() -> list[Callable[[], None]] | None:
        """Functions that load the kernel's executable for each device not in use (part j, j < len(devices), is
        device j's), to run in another thread; None where one of them has none to load (it would compile)."""
        found = [_fit_replicates.loader(*a, **k) for a, k in (arguments(j, parts[j]) for j in range(1, len(devices)))]
        return None if None in found else found

    bar = tqdm(total=len(replicates), disable=not shows_progress(progress), unit="rep", desc="bootstrap")
    with bar, ThreadPoolExecutor(max_workers=1) as loader:
        # The other devices' start, in `loader`'s thread: at once where their executable is at hand (a load,
        # beside the first device's), else after the first round where it repays their start
        at_hand = loads() if in_use < len(devices) else None
        starting = None if at_hand is None else loader.submit(_run_all, at_hand)
        while True:
            running = [j for j in range(len(parts)) if j % len(devices) < in_use]
            usable = np.zeros(batch, dtype=bool)
            for j in running:
                usable[parts[j]] = True
            upcoming += pool.refill(upcoming, len(replicates) - upcoming, usable)
            if not (pool.replicate >= 0).any():
                break
            round_start = time.perf_counter()
            with compile_clock() as compile_s:
                results = [(j, call(j, parts[j])) for j in running]
                pool.fresh[:] = False
                for j, (_, new_states, _) in results:
                    states[j] = new_states
                rows, stat = jax.device_get(([r for _, (r, _, _) in results], [s for _, (_, _, s) in results]))
            round_s, start_s = time.perf_counter() - round_start, compile_s()
            lanes = np.concatenate([np.arange(batch)[parts[j]] for j, _ in results])
            for j, (t, out, (ntheta, p)) in enumerate(zip(targets, outs, sizes)):
                fits, done = _split_rows(np.concatenate([r[j] for r in rows]), ntheta, p)
                at = pool.update(j, done, lanes)
                out.store(pool.replicate[lanes[at]], _take(fits, at), t.model)
                if statistic is not None and j == 0:
                    stat = np.concatenate(stat)
                    if stat_out is None:
                        dtype = np.result_type(stat.dtype, np.float64)
                        stat_out = np.full((len(replicates), *stat.shape[1:]), np.nan, dtype=dtype)
                    stat_out[pool.replicate[lanes[at]]] = stat[at]
            complete = pool.release()
            if first_round and starting is None and in_use < len(devices):
                left = len(replicates) - upcoming + int((pool.replicate >= 0).sum())
                pace = (round_s - start_s) / max(len(complete), 1)  # seconds per replicate on the devices in use
                later = loads()  # None: executables that cannot be moved (caching off), each device compiles its own
                if _others_repay_their_start(devices, start_s, pace * left, movable=later is not None):
                    if later is None:  # their first calls compile them
                        in_use = len(devices)
                    else:
                        starting = loader.submit(_run_all, later)
            first_round = False
            if starting is not None and starting.done():
                starting.result()  # raises what the start raised
                in_use, starting = len(devices), None
            bar.update(len(complete))
            if finished is not None and len(complete):
                finished(complete, outs, stat_out)
    return outs, stat_out


def _run_all(functions: list[Callable[[], None]]) -> None:
    """Call each function, in order."""
    for function in functions:
        function()


# Loading a kernel's executable on another device takes about this at most: 0.1-0.3 s per MB, and the kernels
# are 1-3 MB
_MOST_LOAD_S = 0.5


def _others_repay_their_start(devices: list, start_s: float, rest_s: float, movable: bool) -> bool:
    """After a run's first round on the first device alone (which took `start_s` seconds to compile the kernel's
    executable: none was at hand to load): whether the other devices should start, because that costs less than
    running beside the first one saves, at least half the rest of the run (`rest_s` seconds at the first round's
    pace). Each loads the executable the first device compiled (`movable`, `_compile.jit`), at most
    _MOST_LOAD_S, or else compiles its own, as long as the first device's start."""
    each = min(start_s, _MOST_LOAD_S) if movable else start_s
    return 0.5 * rest_s > (len(devices) - 1) * each


def shows_progress(progress: bool) -> bool:
    """Whether to draw the progress bar (on stderr; tqdm.auto's widget in Jupyter): when asked for
    and someone watches, a terminal or a Jupyter kernel, and never in CI (the variable CI set), so
    that logs hold no bar."""
    watched = sys.stderr.isatty() or "ipykernel.zmqshell" in sys.modules
    return progress and watched and not os.environ.get("CI")


def memory_budget() -> int:
    """Bytes a batch may use: 2 GiB on a CPU, a quarter of an accelerator's memory."""
    if jax.default_backend() == "cpu":
        return _CPU_MEMORY_BUDGET
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("bytes_limit", 4 * _CPU_MEMORY_BUDGET) // 4)


def lane_width(m, platform: str) -> int:
    """How many lanes a device fits at a time by default: a power of two, fixed per model and kind
    of device, never by nsamp (see `parametricbootstrap` on bit-identical results). On a CPU, as
    many lanes as fit in about 2 MiB (cache-sized working sets run fastest), at least 16; on an
    accelerator, which needs wide batches, up to 16384 within a quarter of its memory."""
    lane_bytes = m.lane_bytes()
    most = min(1024, max(16, _CPU_CACHE_BUDGET // lane_bytes)) if platform == "cpu" else 16384
    cap = max(1, min(most, memory_budget() // lane_bytes))
    return 1 << (cap.bit_length() - 1)


def local_devices(devices) -> list:
    """The devices to spread the lanes over: all local ones (default), the first n, or a list."""
    local = jax.local_devices()
    if devices is None:
        return local
    if is_count(devices):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices must be between 1 and {len(local)} (the local devices), got {devices}")
        return local[:devices]
    chosen = list(devices) if isinstance(devices, (list, tuple)) else None
    if not chosen or any(d not in local for d in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"devices must be a count or a list of distinct local devices (jax.local_devices()), got {devices!r}"
        )
    if len({d.platform for d in chosen}) > 1:
        raise ValueError("devices must all be of one kind (all CPUs or all GPUs)")
    return chosen


def is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def process_share(nsamp: int, index: int, count: int) -> range:
    """The replicates process `index` of `count` fits: a contiguous share."""
    return range(index * nsamp // count, (index + 1) * nsamp // count)


def gather(part: dict[str, np.ndarray], nsamp: int) -> dict[str, np.ndarray]:
    """Every process's share of each array (one row per replicate), in replicate order, on every process."""
    longest = -(-nsamp // jax.process_count())
    padded = {name: np.resize(a, (longest, *a.shape[1:])) for name, a in part.items()}
    gathered = multihost_utils.process_allgather(padded)
    sizes = [len(process_share(nsamp, i, jax.process_count())) for i in range(jax.process_count())]
    return {name: np.concatenate([a[i, :n] for i, n in enumerate(sizes)]) for name, a in gathered.items()}
