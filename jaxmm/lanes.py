"""The lane protocol: what a bootstrap replicate lane needs from a kind of model.

The bootstrap engine (jaxmm/bootstrap/engine.py) simulates a response per replicate and refits
it, many replicates side by side ("lanes") in one compiled kernel. It knows no kind of model:
each model class provides, on the host,

- `m.lanes()`: a `Lanes` object, hashable and compared by value (a static argument of the kernel:
  one compilation per model shape), whose pure functions run inside the kernel;
- `m.simulation(params, use_u)`: the pytree of arrays its `simulate` reads;
- `m.refit_target(params, dtype)`: a `Target`, the pytree its `fit` reads and where every lane's
  fit starts (a `SolverState`);
- `m.lane_bytes()`: a lane's working set, to size the batches;
- `m.simulation_parameters(beta, sigma, theta)`: the checked parameters responses are drawn from.

Inside the kernel, for replicate i with key k_i:

    y      = lanes.simulate(k_i, simulation)
    fit, s = lanes.fit(y, target.refit, s, opts, until)   # iterate from state s until done or until
    stat   = statistic(lanes.replicate_fit(y, target.refit, fit))   # optional

y is the simulated response in the form the kind's `fit` reads: its n values, or what they are drawn from
(an LMM's fit needs only sums over the rows, which it forms a chunk of rows at a time, drawing each chunk
there: jaxmm.lmm.LmmDraw); `lanes.response(y)` gives its n values (`simulated_responses`).
A fit that is not done when `until` iterations are reached is continued in the engine's next call
from the returned state, damping and BFGS Hessian included; its FitResult is not read (a lane need not
compute it). A new kind of model implements these (see ARCHITECTURE.md); the engine does not change.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
from jax import Array

from .design import Structure
from .solver import SolverOptions, SolverState


class FitResult(NamedTuple):
    """Everything a fit of one response yields (one lane of a bootstrap batch)."""

    objective: Array
    theta: Array
    beta: Array  # estimable coefficients only
    stderror: Array
    sigma: Array  # NaN for a family without a dispersion parameter
    converged: Array
    niter: Array
    hessian: Array  # of the objective in the solver's coordinates (exact, or BFGS's approximation)


class ReplicateFit(NamedTuple):
    """What a `statistic` is given for each replicate: its fit, in the model's parametrisation.

    beta: the estimable fixed effects (p,); theta; sigma; b: per random-effects term, in the
    order of m.structure.terms, the conditional modes on the original scale, an (m_t, k_t) array
    laid out as m.ranef()[term.group]; fitted: X beta + Z b (n,)."""

    beta: Array
    theta: Array
    sigma: Array
    b: tuple[Array, ...]
    fitted: Array


class Target(NamedTuple):
    """A model every simulated response is fitted to: the model, its `Lanes`, the data its lanes'
    fits read, and the solver state every lane's fit starts from (host arrays)."""

    model: Any
    lanes: Lanes
    refit: Any
    start: SolverState


class Lanes(Protocol):
    """The kernel-side half of the protocol (see the module docstring). Pure functions of arrays."""

    structure: Structure

    @property
    def vectorised(self) -> bool:
        """Whether lanes may run side by side under vmap (see `vectorisable`)."""

    @property
    def calls_lapack(self) -> bool:
        """Whether the kernel's program calls LAPACK on a CPU (see `vectorisable`, `one_device_at_a_time`)."""

    def simulate(self, key: Array, simulation: Any) -> Any: ...

    def response(self, y: Any) -> Array: ...

    def fit(
        self, y: Any, refit: Any, state: SolverState, opts: SolverOptions, until: Array
    ) -> tuple[FitResult, SolverState]: ...

    def replicate_fit(self, y: Any, refit: Any, fit: FitResult) -> ReplicateFit: ...


def vectorisable(calls_lapack: bool, inner_loops: bool = False) -> bool:
    """Whether lanes may run side by side (vmap) rather than one after another (lax.map): always on an
    accelerator (which uses no LAPACK and needs wide batches); on a CPU, unless their program calls LAPACK
    or a lane's objective iterates in loops of its own (`inner_loops`: a GLMM's PIRLS).

    LAPACK: jaxlib 0.10's batched LAPACK kernels split a large batch into pieces on XLA's CPU thread
    pool and block their thread until the pieces are done; two such calls at once can hold every
    thread of the pool, and nothing runs the pieces. Seen on 2 cores: pastes' bootstrap on 4 CPU
    devices (3 runs of 3), verbagg's on one. One lane at a time, each call factors one matrix, which
    is never split.

    Inner loops: under vmap a while loop runs until its slowest lane is done, every lane computing
    each iteration; the objective's own loops (PIRLS's iterations and step halvings, at every
    evaluation) multiply that wait, and a batch's working set is its lanes' together. One at a time,
    each lane iterates as often as it needs and skips what only a finished fit computes (lax.cond:
    solver.finish's probes, GlmmLanes.fit's result; measured: GlmmLanes.vectorised)."""
    return jax.default_backend() != "cpu" or not (calls_lapack or inner_loops)


def one_device_at_a_time(lanes: tuple[Lanes, ...], platform: str) -> bool:
    """Whether a bootstrap of these lanes must keep to one device: on a CPU, where a kernel calls LAPACK. Two
    devices' calls at once, each factoring its lanes' matrices one at a time, hang in jaxlib 0.10's LAPACK
    kernels as two batched calls do (see `vectorisable`; seen: the kb07-size maximal LMM on 2 CPU devices,
    both calls blocked, no CPU used, 2 runs of 2)."""
    return platform == "cpu" and any(lane.calls_lapack for lane in lanes)
