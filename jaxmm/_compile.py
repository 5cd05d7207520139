"""How jaxmm compiles: its compiled programs kept on disk, and XLA options chosen per model size.

Compiling a model's fitting function takes seconds: tracing it to a jaxpr, lowering that to MLIR and
compiling it with XLA. The executable depends only on the function, its static arguments and its
arguments' shapes, so `jit` keeps each one on disk (`ExecutableStore`), under a digest of all of
these and of the software that made it; a later process calling with the same shapes loads it and
neither traces, lowers nor compiles. JAX's own persistent compilation cache, switched on too, keeps
what jaxmm compiles outside `jit`: the small programs of its eager operations (a bootstrap's set-up
runs about 30, each 20-50 ms to compile and a few to load), so it keeps every program however quick
its compile (it skips only XLA's stage: tracing and lowering are still paid). Both are switched on
when jaxmm first computes (`computing`), not on import: importing jaxmm changes no JAX setting. (JAX
decides whether to use its cache at its first compilation in the process: a process that compiled
something before jaxmm's first computation runs without it.) Set JAXMM_CACHE_DIR to choose the
folder, or to "" to switch both off; a cache folder the user configured for JAX already is left alone.

A small model (a dense Schur complement of at most `SMALL_DENSE` rows: sleepstudy, dyestuff,
penicillin) fits in milliseconds and compiles in seconds, so on a CPU its functions are compiled
with XLA's classic loop emitters instead of the newer fusion emitters: measured on sleepstudy's
bootstrap kernel, compilation takes about half the time and the code runs as fast. For a large
model (insteval) the fusion emitters' code runs faster (8.1 s vs 10.6 s per fit), so it keeps them.

A small model's own fit (`jit(..., once=True)`: a program that runs once per fit, not once per
bootstrap replicate) is also compiled without LLVM's optimisations (XLA's backend optimisation level
0) where theta has at most UNOPTIMISED_NTHETA components: they were most of its compile, and its code
runs in milliseconds either way (a kb07-size maximal model's, 20 components, ran 0.6 -> 1.2 s
unoptimised, to compile in 3 s CPU instead of 6: it keeps them). Measured side by
side (process CPU seconds of a first fit, cache empty): sleepstudy 2.4 -> 1.35 s, cbpp 8.2 -> 5.8 s,
grouseticks 16.8 -> 10.2 s; the fit itself runs slower (grouseticks 0.16 -> 0.33 s, sleepstudy's
4-8 ms unchanged). Nor does XLA move loop-invariant code out of its while loops there (nor simplify
them after): sleepstudy 1.28 -> 1.14 s, cbpp 4.3 -> 3.3 s, grouseticks 7.7 -> 5.7 s, whose fit runs
faster again (0.33 -> 0.25 s). Its numbers round differently in the last bits: the criterion by up to
17 ulps, theta, beta and their standard errors by up to 3e-13 relative, far inside the solver's
tolerances.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import inspect
import io
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jaxlib
import numpy as np

SMALL_DENSE = 256
UNOPTIMISED_NTHETA = 8
_CLASSIC_CPU = {"xla_cpu_use_fusion_emitters": False}
# No LLVM optimisations, nor XLA's passes that move loop-invariant code out of while loops and then
# simplify the loops (together a third of a GLMM fit's HLO passes: each scatter is a loop on a CPU)
_UNOPTIMISED_CPU = {
    **_CLASSIC_CPU,
    "xla_backend_optimization_level": 0,
    "xla_disable_hlo_passes": "while-loop-invariant-code-motion,simplify-while-loops",
}


def cache_folder() -> Path | None:
    """JAXMM_CACHE_DIR (default ~/.cache/jaxmm/xla), or None where it is "" (no caching)."""
    folder = os.environ.get("JAXMM_CACHE_DIR", str(Path.home() / ".cache" / "jaxmm" / "xla"))
    return Path(folder) if folder else None


def enable_compilation_cache() -> None:
    """Keep compiled programs in JAXMM_CACHE_DIR (default ~/.cache/jaxmm/xla), unless it is "" or
    JAX already has a cache folder. Called by jaxmm's first compilation; calling it again does nothing."""
    folder = cache_folder()
    if folder is None or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# At most this many CPU devices by default (`use_cpu_cores`): each holds a batch of lanes in memory.
MAX_CPU_DEVICES = 8


@functools.cache
def use_cpu_cores() -> None:
    """Show JAX one CPU device per core (at most MAX_CPU_DEVICES), so that a bootstrap runs a kernel call on each
    core side by side (bootstrap/engine.py; its numbers do not depend on the device count). JAX's CPU backend
    has one device otherwise, and one device runs one call at a time: measured on 2 cores, sleepstudy's
    bootstrap takes 0.032 ms per replicate on two devices against 0.052 on one. Only possible before JAX has
    started (it is left as it is after), and only where the user has not chosen a count (jax_num_cpu_devices,
    JAX_NUM_CPU_DEVICES, or XLA_FLAGS' --xla_force_host_platform_device_count)."""
    chosen = jax.config.jax_num_cpu_devices != -1 or "xla_force_host_platform_device_count" in os.environ.get(
        "XLA_FLAGS", ""
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if chosen or cores < 2:
        return
    with contextlib.suppress(RuntimeError):  # JAX has started: its backends keep their devices
        jax.config.update("jax_num_cpu_devices", min(cores, MAX_CPU_DEVICES))


@contextlib.contextmanager
def computing() -> Iterator[None]:
    """The context of jaxmm's own JAX computations: float64 enabled for them (the user's global
    setting is left alone), a CPU device per core (`use_cpu_cores`) and the persistent compilation cache
    set up before anything runs or compiles, and the BLAS under jaxlib's LAPACK calls single-threaded
    (`_blas_single_threaded`)."""
    use_cpu_cores()
    enable_compilation_cache()
    with jax.enable_x64(True), _blas_single_threaded():
        yield


@functools.cache
def _lapack_blas() -> tuple:
    """The BLAS libraries of the process (threadpoolctl's controllers), SciPy's LAPACK loaded first:
    jaxlib's LAPACK kernels call it."""
    import scipy.linalg.cython_lapack  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def _blas_single_threaded() -> Iterator[None]:
    """One BLAS thread within the block, as many as before after it. jaxlib runs a LAPACK call (a
    Cholesky factor or triangular solve of more than linalg.LOOP_MAX rows) on one of XLA's threads, and
    SciPy's OpenBLAS under it starts threads of its own that wait for each other by spinning: on a CPU
    that other work shares they take turns with it, and the call slows down by one to two orders of
    magnitude (measured at load 8-12 on 2 cores: a 1,145 x 1,145 factor 0.1-2.3 s against 34-59 ms
    single-threaded; a kb07-size zerocorr LMM's bootstrap 3.3-3.7 s per replicate against 38-65 ms)."""
    libraries = _lapack_blas()
    before = [library.get_num_threads() for library in libraries]
    for library in libraries:
        library.set_num_threads(1)
    try:
        yield
    finally:
        for library, threads in zip(libraries, before):
            library.set_num_threads(threads)


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


def _record_compile(start: float, end: float) -> None:
    """Time `jit` spent getting an executable (loading it from the store, or compiling and storing it)."""
    for spans in _open_clocks:
        spans.append((start, end))


_jax_cache_hits = [0]


def _count_jax_cache_hit(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _jax_cache_hits[0] += 1


@functools.cache
def _listen() -> None:
    jax.monitoring.register_event_time_span_listener(_record_span)
    jax.monitoring.register_event_listener(_count_jax_cache_hit)


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
def _available(options: tuple) -> bool:
    """Whether this XLA still has these options (a newer one may drop one; then fewer are used)."""
    try:
        jax.jit(lambda x: x + 1.0, compiler_options=dict(options)).lower(0.0).compile()
    except Exception:
        return False
    return True


def compiler_options(structure, once: bool = False) -> dict | None:
    """XLA's options for a program of a model of shape `structure` (see the module docstring); `once`:
    a program that runs once per fit (compiled unoptimised where the model and its theta are small)."""
    if jax.default_backend() != "cpu" or not is_small(structure):
        return None
    unoptimised = once and structure.ntheta <= UNOPTIMISED_NTHETA
    candidates = (_UNOPTIMISED_CPU, _CLASSIC_CPU) if unoptimised else (_CLASSIC_CPU,)
    return next((options for options in candidates if _available(tuple(options.items()))), None)


class _Unstable(Exception):
    """A static argument without a description that is the same in every process (a user's closure)."""


def _stable(value) -> str:
    """A description of a static argument that is the same in every process (hash() is salted per
    process, and a default repr may hold a memory address): its type and contents, recursively."""
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if value is None or kind in (bool, int, float, complex, str, bytes):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{name}.{value.name}"
    if isinstance(value, (np.ndarray, np.generic)):
        value = np.asarray(value)
        return f"{name}({value.dtype.str}{value.shape}:{hashlib.sha256(value.tobytes()).hexdigest()})"
    if isinstance(value, (tuple, list, frozenset)):
        items = sorted(map(_stable, value)) if isinstance(value, frozenset) else map(_stable, value)
        return f"{name}({', '.join(items)})"
    if isinstance(value, dict):
        return f"{name}({', '.join(sorted(f'{_stable(k)}: {_stable(v)}' for k, v in value.items()))})"
    if dataclasses.is_dataclass(value):
        fields = (f"{f.name}={_stable(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{name}({', '.join(fields)})"
    if isinstance(value, functools.partial):
        return f"partial({_stable(value.func)}, {_stable(value.args)}, {_stable(value.keywords)})"
    if callable(value) and "<" not in getattr(value, "__qualname__", "<"):
        module = getattr(value, "__module__", None) or ""
        if module.split(".")[0] == "jaxmm":  # jaxmm's own functions: covered by the source digest
            return f"{module}.{value.__qualname__}"
    raise _Unstable(name)


@functools.cache
def _software() -> str:
    """What an executable depends on besides its program: JAX and XLA, the device, the machine's
    instruction set (XLA compiles for the CPU it runs on), Python and jaxmm's sources."""
    sources = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        sources.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    device = jax.devices()[0]
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return repr(
        (
            jax.__version__,
            jaxlib.__version__,
            device.platform,
            device.client.platform_version,
            device.device_kind,
            platform.machine(),
            hashlib.sha256(cpu.encode()).hexdigest(),
            sys.version_info[:2],
            sources.hexdigest(),
        )
    )


# JAX settings that change what a function traces to
_TRACING_CONFIG = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_dtype_promotion",
    "jax_threefry_partitionable",
    "jax_default_prng_impl",
    "jax_debug_nans",
    "jax_debug_infs",
)


def _leaf_type(leaf) -> tuple:
    """What a compiled program specialises on in an argument array: shape, dtype and weak typing."""
    if isinstance(leaf, (np.ndarray, jax.Array)):
        return leaf.shape, leaf.dtype, getattr(leaf, "weak_type", False)
    aval = jax.typeof(leaf)
    return aval.shape, aval.dtype, aval.weak_type


class ExecutableStore:
    """Compiled executables on disk, one file per call signature, named by the SHA-256 of the
    function's name, its static arguments (`_stable`), its arguments' pytree structure and array types,
    the JAX settings that change tracing and `_software()`. A file holds a checksum and an executable
    serialised by `_serialised`; one that fails to load (corrupt, truncated, written by other software) is
    compiled again and replaced. Loading unpickles it: the folder must be as trusted as the Python code that
    runs (as JAX's own cache). The oldest files (by last use) are removed beyond `max_bytes`."""

    _MAGIC = b"jaxmm-executable-3\n"

    def __init__(self, folder: Path, max_bytes: int = 2 * 1024**3):
        self.folder, self.max_bytes = folder, max_bytes

    def path(self, fun: Callable, statics: dict, treedef, types: tuple) -> Path | None:
        """Where the executable of this call lives (for every device: `_loaded` places it on one); None where a
        static argument has no stable description."""
        try:
            described = ", ".join(f"{k}={_stable(v)}" for k, v in statics.items())
        except _Unstable:
            return None
        config = tuple(getattr(jax.config, name) for name in _TRACING_CONFIG)
        array_types = ", ".join(f"{d}{s}{'w' if w else ''}" for s, d, w in types)
        key = repr((fun.__module__, fun.__qualname__, described, str(treedef), array_types, config, _software()))
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.jaxexe"

    def read(self, path: Path) -> bytes | None:
        """The serialised executable stored at `path`, or None where there is none or its checksum fails."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        head, digest, body = (
            raw[: len(self._MAGIC)],
            raw[len(self._MAGIC) : len(self._MAGIC) + 32],
            raw[len(self._MAGIC) + 32 :],
        )
        if head != self._MAGIC or hashlib.sha256(body).digest() != digest:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for `_evict`
        return body

    def write(self, path: Path, body: bytes) -> bool:
        """Store a serialised executable at `path` (written to a temporary file and renamed: readers never see
        half a file); whether it was stored (a folder that cannot be written to is no error: the next process
        compiles again)."""
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(self._MAGIC + hashlib.sha256(body).digest() + body)
            os.replace(temporary, path)
            self._evict()
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
            return False
        return True

    def _evict(self) -> None:
        files = []
        for entry in os.scandir(self.folder):
            if entry.name.endswith(".jaxexe"):
                with contextlib.suppress(OSError):
                    stat = entry.stat()
                    files.append((stat.st_mtime, stat.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        for _, size, name in sorted(files):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(name)
                total -= size


@functools.cache
def _bind_lapack() -> None:
    """Bind jaxlib's LAPACK kernels, which a CPU executable calls (Cholesky, triangular solves):
    jaxlib binds them when it first lowers such a call, so an executable loaded in a process that has
    lowered none would call unbound functions and crash. (jax.export does the same before loading.)"""
    from jax._src.lax import linalg

    linalg.initialize_lapack()


def _serialised(compiled) -> bytes | None:
    """`compiled` as bytes (jax.experimental.serialize_executable: its code and pytrees), or None where this
    backend cannot serialise it."""
    from jax.experimental.serialize_executable import serialize

    try:
        return pickle.dumps(serialize(compiled))
    except Exception:
        return None


def _loaded(body: bytes, device):
    """The executable serialised in `body` (`_serialised`), loaded to run on `device`, whichever device of the
    backend it was compiled for: its code is the same for all of them, only its device assignment is not, and
    that is given again here (as JAX compiles for one device). None where it does not load (written by other
    software despite the checksum, or unreadable): the caller compiles."""
    from jax._src import compiler
    from jax.experimental import serialize_executable

    class OnDevice(serialize_executable._JaxPjrtUnpickler):
        def persistent_load(self, pid):
            if pid[0] == "exec":
                options = compiler.get_compile_options(1, 1, device_assignment=[device], backend=self.backend)
                return self.backend.deserialize_executable(pid[1], self.execution_devices, options)
            return device if pid[0] == "device" else super().persistent_load(pid)

    try:
        _bind_lapack()
        serialised, in_tree, out_tree = pickle.loads(body)
        unloaded, args_info, no_kwargs = OnDevice(io.BytesIO(serialised), device.client, [device]).load()
        return jax.stages.Compiled(unloaded.load(), [], in_tree.unflatten(args_info), out_tree, no_kwargs=no_kwargs)
    except Exception:
        return None


def executable_store() -> ExecutableStore | None:
    """The store in JAXMM_CACHE_DIR's `executables` folder; None where caching is off."""
    folder = cache_folder()
    return None if folder is None else ExecutableStore(folder / "executables")


def jit(fun: Callable, static_argnames: tuple[str, ...], once: bool = False) -> Callable:
    """jax.jit(fun, static_argnames), compiled with `compiler_options(structure, once)`, whose executables
    are kept in the `executable_store()` (see the module docstring): a call with a signature new to the
    process loads its executable from there, or compiles it (trace, lower, XLA) and stores it.

    An executable runs on one device: each call's is that of the device its committed array arguments are on
    (JAX's default device where none is committed: a fit), so the bootstrap's calls on several local devices
    (`jax_num_cpu_devices`, bootstrap/engine.py) each have their own, all loaded from one compiled program
    (`_loaded`): another device costs a load, not a compile, which `call.loader` can run in another thread.
    `call.executable` gives what a call runs, for callers making many calls of one signature.
    `structure` (static) must be passed by keyword.
    With other static arguments passed positionally, arguments committed to several devices, several
    processes, or caching off, it is jax.jit itself."""
    variants: dict[tuple[bool, bool], Callable] = {}
    executables: dict[tuple, Callable] = {}  # by signature and device
    unstored: dict[tuple, bytes] = {}  # serialised executables by signature, where the store has none to read
    parameters = list(inspect.signature(fun).parameters.values())
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}

    @functools.wraps(fun)
    def for_store(*args, **kwargs):
        return fun(*args, **kwargs)

    # A name of its own for the programs compiled for the store: JAX's cache keys include it, so no
    # program JAX cached from plain `jax.jit` (an earlier jaxmm) is loaded instead of compiled
    for_store.__name__ = for_store.__qualname__ = f"stored_{fun.__name__}"

    def jitted(structure, stored: bool = False) -> Callable:
        options = compiler_options(structure, once)
        key = (options is not None, stored)
        if key not in variants:
            target = for_store if stored else fun
            variants[key] = jax.jit(target, static_argnames=static_argnames, compiler_options=options)
        return variants[key]

    def resolve(args: tuple, kwargs: dict) -> tuple | None:
        """(statics, the other keyword arguments, treedef and types of the arguments, device, signature) of a
        call, or None where it is jax.jit's (see above)."""
        store = executable_store()
        positional = {p.name for p in parameters[: len(args)]}
        given = all(name in kwargs or name in defaults for name in static_argnames)
        plain = store is None or positional & set(static_argnames) or not given or jax.config.jax_disable_jit
        if plain or jax.process_count() > 1:
            return None
        statics = {name: kwargs.get(name, defaults.get(name)) for name in static_argnames}
        rest = {name: value for name, value in kwargs.items() if name not in statics}
        leaves, treedef = jax.tree.flatten((args, rest))
        device = _call_device(leaves)
        if device is None:
            return None
        types = tuple(map(_leaf_type, leaves))
        config = tuple(getattr(jax.config, name) for name in _TRACING_CONFIG)
        return statics, rest, treedef, types, device, (tuple(statics.values()), treedef, types, config)

    def kept(signature: tuple, store: ExecutableStore, path: Path | None, device):
        """The executable of `signature`, kept in memory (`unstored`) or in the store at `path`, loaded for
        `device`; None where neither holds it, or it does not load."""
        body = unstored.get(signature) or (None if path is None else store.read(path))
        return None if body is None else _loaded(body, device)

    def executable(*args, structure, **kwargs) -> Callable:
        """What a call with these arguments runs, to be called with those of them that are not static: its
        executable, loaded or compiled on first use (see above), or jax.jit's function with the static ones
        bound. A caller making many calls of one signature (the bootstrap's rounds) spares them the look-up."""
        kwargs["structure"] = structure
        resolved = resolve(args, kwargs)
        if resolved is None:
            return functools.partial(jitted(structure), **{k: v for k, v in kwargs.items() if k in static_argnames})
        statics, kwargs, treedef, types, device, signature = resolved
        compiled = executables.get((signature, device))
        if compiled is None:
            start = time.time()  # JAX's timers' clock (compile_clock takes the union with theirs)
            store = executable_store()
            path = store.path(fun, statics, treedef, types)
            compiled = kept(signature, store, path, device)
            if compiled is None:
                _listen()
                target = jitted(structure, stored=True)  # first: it may probe XLA's options (`_available`)
                hits = _jax_cache_hits[0]
                with _kept_out_of_jax_cache():
                    compiled = target.lower(*args, **kwargs, **statics).compile()
                # An executable JAX loaded from its own cache serialises without its code (XLA's CPU
                # client): only one XLA compiled in this process is stored.
                body = _serialised(compiled) if _jax_cache_hits[0] == hits else None
                if body is not None and (path is None or not store.write(path, body)):
                    unstored[signature] = body  # for other devices
            _record_compile(start, time.time())
            executables[signature, device] = compiled
        return compiled

    @functools.wraps(fun)
    def call(*args, structure, **kwargs):
        rest = {name: value for name, value in kwargs.items() if name not in static_argnames}
        return executable(*args, structure=structure, **kwargs)(*args, **rest)

    def loader(*args, structure, **kwargs) -> Callable[[], None] | None:
        """A function that loads the executable of this call (`call`'s arguments) for its device and keeps it,
        to run in another thread: it neither traces nor compiles, which depend on the calling thread's JAX
        settings (jax.enable_x64 is one), and does nothing where the executable is loaded already. None where
        there is none to load: neither stored nor compiled by this process (for another device)."""
        resolved = resolve(args, {**kwargs, "structure": structure})
        if resolved is None:
            return None
        statics, _, treedef, types, device, signature = resolved
        store = executable_store()
        path = store.path(fun, statics, treedef, types)
        if signature not in unstored and (path is None or not path.exists()):
            return None

        def load() -> None:
            if (signature, device) in executables:
                return
            compiled = kept(signature, store, path, device)
            if compiled is not None:  # else the device's first call compiles
                executables.setdefault((signature, device), compiled)

        return load

    call.executable, call.loader = executable, loader
    return call


@contextlib.contextmanager
def _kept_out_of_jax_cache() -> Iterator[None]:
    """JAX writes no program compiled in the block to its persistent cache: `jit`'s executables are
    in the store, and a later compile that found one in JAX's cache could not store it (see `jit`)."""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float("inf"))
    try:
        yield
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


def _call_device(leaves: list):
    """The device a call with these argument leaves runs on: the one its committed arrays are on, or JAX's
    default device where none is committed (None where they are on several, or a default is set)."""
    devices = {d for leaf in leaves if isinstance(leaf, jax.Array) and leaf.committed for d in leaf.devices()}
    if len(devices) > 1 or (not devices and jax.config.jax_default_device is not None):
        return None
    return devices.pop() if devices else jax.devices()[0]
