"""How jaxmm compiles: a persistent compilation cache, and XLA options chosen per model size.

Compiling a model's fitting function takes seconds; the compiled executable depends only on the
model's shapes, so it is kept on disk and a later session with the same model loads it instead.
The cache is switched on when jaxmm first computes (`computing`), not on import: importing jaxmm
changes no JAX setting. (JAX decides whether to use a cache at its first compilation in the
process: a process that compiled something before jaxmm's first computation runs without it.)
Set JAXMM_CACHE_DIR to choose the folder, or to "" to switch this off; a cache folder the user
configured for JAX already is left alone.

A small model (a dense Schur complement of at most `SMALL_DENSE` rows: sleepstudy, dyestuff,
penicillin) fits in milliseconds and compiles in seconds, so on a CPU its functions are compiled
with XLA's classic loop emitters instead of the newer fusion emitters: measured on sleepstudy's
bootstrap kernel, compilation takes about half the time and the code runs as fast. For a large
model (insteval) the fusion emitters' code runs faster (8.1 s vs 10.6 s per fit), so it keeps them.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax

SMALL_DENSE = 256
_CLASSIC_CPU = {"xla_cpu_use_fusion_emitters": False}


def enable_compilation_cache() -> None:
    """Keep compiled programs in JAXMM_CACHE_DIR (default ~/.cache/jaxmm/xla), unless it is "" or
    JAX already has a cache folder. Called by jaxmm's first compilation; calling it again does nothing."""
    folder = os.environ.get("JAXMM_CACHE_DIR", str(Path.home() / ".cache" / "jaxmm" / "xla"))
    if not folder or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@contextlib.contextmanager
def computing() -> Iterator[None]:
    """The context of jaxmm's own JAX computations: float64 enabled for them (the user's global
    setting is left alone) and the persistent compilation cache set up before anything compiles."""
    enable_compilation_cache()
    with jax.enable_x64(True):
        yield


# JAX's own timers (jax.monitoring) of a compilation's three stages; the last includes loading the
# executable from the persistent cache instead of compiling it
_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_open_clocks: list[list[tuple[float, float]]] = []


def _record_span(event: str, start: float, end: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        for spans in _open_clocks:
            spans.append((start, end))


@functools.cache
def _listen() -> None:
    jax.monitoring.register_event_time_span_listener(_record_span)


@contextlib.contextmanager
def compile_clock() -> Iterator[Callable[[], float]]:
    """Within the block, the seconds JAX has spent compiling: tracing to a jaxpr, lowering to MLIR and
    compiling it with XLA (or loading it from the persistent cache), as JAX's own timers record them.
    Yields a function returning that time so far: the length of the union of those stages' time spans,
    so that a trace nested in another (a jitted function called while tracing one) counts once. Code
    that is compiled already records nothing: 0. Compilations by other threads in the meantime count too."""
    _listen()
    spans: list[tuple[float, float]] = []
    _open_clocks.append(spans)

    def seconds() -> float:
        total, reached = 0.0, -float("inf")
        for start, end in sorted(spans):
            total += max(0.0, end - max(start, reached))
            reached = max(reached, end)
        return total

    try:
        yield seconds
    finally:
        _open_clocks.remove(spans)


def is_small(structure) -> bool:
    """Whether the model's dense part (Zr, X, y) has at most SMALL_DENSE rows."""
    return structure.qrest + structure.p + 1 <= SMALL_DENSE


@functools.cache
def _classic_emitters_available() -> bool:
    """Whether this XLA still has the option (a newer one may drop it; then the default is used)."""
    try:
        jax.jit(lambda x: x + 1.0, compiler_options=_CLASSIC_CPU).lower(0.0).compile()
    except Exception:
        return False
    return True


def compiler_options(structure) -> dict | None:
    if jax.default_backend() == "cpu" and is_small(structure) and _classic_emitters_available():
        return _CLASSIC_CPU
    return None


def jit(fun: Callable, static_argnames: tuple[str, ...]) -> Callable:
    """jax.jit(fun, static_argnames), compiled with `compiler_options(structure)`.

    `structure` (static) must be passed by keyword."""
    variants: dict[bool, Callable] = {}

    @functools.wraps(fun)
    def call(*args, structure, **kwargs):
        options = compiler_options(structure)
        key = options is not None
        if key not in variants:
            variants[key] = jax.jit(fun, static_argnames=static_argnames, compiler_options=options)
        return variants[key](*args, structure=structure, **kwargs)

    return call
