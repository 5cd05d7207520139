"""Scale-out: lanes spread over several devices, and a bootstrap spread over two processes.

Both run in subprocesses, so that this process keeps its single CPU device:
- four CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4): devices=4 against
  devices=1 in the same process, bit-identical (every device runs the one-device program);
- two processes on one machine with a loopback coordinator (examples/distributed_bootstrap.py),
  against a single-process run here: bit-identical, since each process runs the same one-device
  code on its share.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm import _compile
from jaxmm.bootstrap import engine

ROOT = Path(__file__).resolve().parents[1]
DY = "yield ~ 1 + (1|batch)"
SS = "reaction ~ 1 + days + (1 + days|subj)"
NSAMP = 100
PASTES = "strength ~ 1 + (1|batch) + (1|batch:cask)"
SEED = 42


def _env(**extra) -> dict:
    """This environment without XLA_FLAGS (one CPU device), with `extra` and this checkout on the path."""
    return {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "PYTHONPATH": str(ROOT), **extra}


def _bits(tbl: pd.DataFrame) -> np.ndarray:
    return tbl.to_numpy(dtype=np.float64).view(np.uint64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FOUR_DEVICES = """
import sys, warnings
import jax, jaxmm, pandas as pd
warnings.simplefilter("ignore")
assert len(jax.devices()) == 4, jax.devices()
data = pd.read_parquet(sys.argv[2]) if sys.argv[2].endswith(".parquet") else jaxmm.dataset(sys.argv[2])
m = jaxmm.fit(sys.argv[1], data)
for devices in (1, 4):
    samp = jaxmm.parametricbootstrap(int(sys.argv[3]), int(sys.argv[4]), m, progress=False, devices=devices)
    samp.tbl.to_parquet(f"{sys.argv[5]}/{devices}.parquet")
"""


@pytest.mark.parametrize(("formula", "dataset", "nsamp"), [(SS, "sleepstudy", 600), (PASTES, "pastes", 10_000)])
def test_four_devices_agree_with_one(formula, dataset, nsamp, tmp_path):
    """Every one of the four devices gets replicates (sleepstudy fits 128 lanes per call, pastes 64).
    pastes' dense part (12 rows) is factored by LAPACK, whose batched kernels deadlocked with four
    devices on two cores until such lanes ran one at a time: 10,000 replicates hung 3 of 3 runs (the
    subprocess then hits its timeout)."""
    _four_devices_agree_with_one(formula, dataset, nsamp, tmp_path)


def test_four_devices_agree_with_one_chunked_response(tmp_path):
    """A response of more than jaxmm.lmm.CHUNK_ROWS rows, which each lane draws and sums a chunk of rows at
    a time (2 chunks here): 64 replicates give each device one call of 16 lanes."""
    from jaxmm.lmm import CHUNK_ROWS

    n = CHUNK_ROWS + 20_001
    rng = np.random.default_rng(5)
    g = rng.integers(0, 60, n)
    x = rng.normal(size=n)
    y = 2.0 + 0.3 * x + 0.7 * rng.normal(size=60)[g] + rng.normal(size=n)
    pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)}).to_parquet(tmp_path / "data.parquet")
    _four_devices_agree_with_one("y ~ 1 + x + (1|g)", str(tmp_path / "data.parquet"), 64, tmp_path)


def _four_devices_agree_with_one(formula: str, dataset: str, nsamp: int, tmp_path) -> None:
    """A bootstrap on four CPU devices and on one, in a subprocess: bit-identical tables."""
    subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES, formula, dataset, str(SEED), str(nsamp), str(tmp_path)],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
        check=True,
        timeout=300,
    )
    one, four = (pd.read_parquet(tmp_path / f"{d}.parquet") for d in (1, 4))
    assert list(four.columns) == list(one.columns) and len(four) == nsamp
    np.testing.assert_array_equal(_bits(four), _bits(one))


def test_two_processes_equal_one_process(tmp_path):
    out = tmp_path / "boot.parquet"
    port = _free_port()
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "distributed_bootstrap.py"),
        "--coordinator",
        f"127.0.0.1:{port}",
        "--processes",
        "2",
        "--dataset",
        "dyestuff",
        "--formula",
        DY,
        "-n",
        str(NSAMP),
        "--seed",
        str(SEED),
        "--out",
        str(out),
    ]
    procs = [
        subprocess.Popen([*cmd, "--process-id", str(i)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in (0, 1)
    ]
    logs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    m = jaxmm.fit(DY, jaxmm.dataset("dyestuff"))
    single = jaxmm.parametricbootstrap(SEED, NSAMP, m, progress=False)
    gathered = jaxmm.restorereplicates(out, m)
    np.testing.assert_array_equal(_bits(gathered.tbl), _bits(single.tbl))
    np.testing.assert_array_equal(gathered.converged, single.converged)


# A fresh process without a device count of its own: jaxmm shows JAX a CPU device per core at its first fit. With
# the store empty, a short bootstrap runs on the first device alone (it compiles the kernel; loading it on another
# costs more than the rest of the run saves); the next one's other devices load it at once, in a thread, and join;
# one on every device uses them all. With the store holding the kernel, a fresh process's first bootstrap loads it
# on every device at once. With starts made free (engine._MOST_LOAD_S = 0), the other devices load the kernel the
# first compiled after its first round. The tables are those of one device.
LAZY_DEVICES = """
import json, os, sys, jax, numpy as np, jaxmm
from jaxmm.bootstrap import engine
from types import SimpleNamespace
used, loaded, kernel = [], [], engine._fit_replicates
device = lambda args: next(iter(args[4][0].theta.devices())).id
def executable(*a, **k):
    run = kernel.executable(*a, **k)
    return lambda *args: used.append(device(args)) or run(*args)
def loader(*a, **k):
    load = kernel.loader(*a, **k)
    return None if load is None else (lambda: loaded.append(device(a)) or load())
engine._fit_replicates = SimpleNamespace(executable=executable, loader=loader)
engine._MOST_LOAD_S = float(sys.argv[1])
m = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff"))
runs = {}
for name, devices in zip(sys.argv[2:], (None, None, jax.device_count(), 1)):
    used.clear(), loaded.clear()
    tbl = jaxmm.parametricbootstrap(5, 3000, m, progress=False, devices=devices).tbl
    runs[name] = {"devices": sorted(set(used)), "loaded": sorted(loaded), "bits": tbl.to_numpy().tobytes().hex()}
print(json.dumps({"count": jax.device_count(), "cores": len(os.sched_getaffinity(0)), "runs": runs}))
"""


def _lazy_devices(cache, most_load_s: float, *names: str) -> tuple[int, dict]:
    env = {**{k: v for k, v in _env().items() if k != "JAX_NUM_CPU_DEVICES"}, "JAXMM_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-c", LAZY_DEVICES, str(most_load_s), *names]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["count"] == min(result["cores"], _compile.MAX_CPU_DEVICES)
    return result["count"], result["runs"]


def test_cpu_devices_per_core_and_lazily_started(tmp_path):
    count, first = _lazy_devices(tmp_path / "store", engine._MOST_LOAD_S, "short", "next", "all", "one")
    _, fresh = _lazy_devices(tmp_path / "store", engine._MOST_LOAD_S, "stored")
    _, free = _lazy_devices(tmp_path / "other", 0.0, "free")
    others, all_devices = list(range(1, count)), list(range(count))
    assert first["short"]["devices"] == first["one"]["devices"] == [0] and first["short"]["loaded"] == []
    assert first["next"]["loaded"] == fresh["stored"]["loaded"] == free["free"]["loaded"] == others
    assert first["all"]["devices"] == all_devices and first["all"]["loaded"] == first["one"]["loaded"] == []
    assert len({run["bits"] for runs in (first, fresh, free) for run in runs.values()}) == 1


def test_other_devices_start_where_the_rest_of_the_run_repays_their_start():
    """Where the first device compiled the kernel (8 s), each other device loads it, at most
    engine._MOST_LOAD_S (or as little as the first device's start), and they join where half the rest of the run
    is more than that; an executable that cannot be moved (caching off) costs each device a compile."""
    two, four = [SimpleNamespace(id=i) for i in range(2)], [SimpleNamespace(id=i) for i in range(4)]
    most, repay = engine._MOST_LOAD_S, engine._others_repay_their_start
    assert not repay(two, 8.0, 1.9 * most, movable=True) and repay(two, 8.0, 2.1 * most, movable=True)
    assert not repay(four, 8.0, 5.9 * most, movable=True) and repay(four, 8.0, 6.1 * most, movable=True)
    assert not repay(two, 0.1, 0.19, movable=True) and repay(two, 0.1, 0.21, movable=True)
    assert not repay(two, 8.0, 15.9, movable=False) and repay(two, 8.0, 16.1, movable=False)


# A crossed LMM whose dense part (g2's 50 levels, X, y; g1's 60 come first) exceeds jaxmm.linalg.LOOP_MAX: its
# kernel calls LAPACK.
LAPACK_ON_TWO_DEVICES = """
import json, jax, numpy as np, pandas as pd, jaxmm
from jaxmm.bootstrap import engine
rng = np.random.default_rng(2)
g1, g2 = np.repeat(np.arange(60), 50), np.tile(np.arange(50), 60)
y = 1.0 + rng.normal(size=60)[g1] + 0.5 * rng.normal(size=50)[g2] + rng.normal(size=3000)
data = pd.DataFrame({"y": y, "g1": pd.Categorical(g1), "g2": pd.Categorical(g2)})
m = jaxmm.fit("y ~ 1 + (1|g1) + (1|g2)", data)
from types import SimpleNamespace
used, kernel = [], engine._fit_replicates
def executable(*a, **k):
    run = kernel.executable(*a, **k)
    return lambda *args: used.append(next(iter(args[4][0].theta.devices())).id) or run(*args)
engine._fit_replicates = SimpleNamespace(executable=executable, loader=kernel.loader)
two = jaxmm.parametricbootstrap(4, 40, m, progress=False, devices=2).tbl
one = jaxmm.parametricbootstrap(4, 40, m, progress=False, devices=1).tbl
print(json.dumps({"lapack": m.lanes().calls_lapack, "devices": sorted(set(used)), "same": one.equals(two)}))
"""


def test_a_kernel_calling_lapack_keeps_to_one_cpu_device():
    """Two CPU devices' LAPACK calls at once hang jaxlib's thread pool (the kb07-size maximal LMM did): such a
    model's bootstrap runs on one device even where more are asked for, and finishes."""
    env = {**_env(), "JAX_NUM_CPU_DEVICES": "2"}
    out = subprocess.run(
        [sys.executable, "-c", LAPACK_ON_TWO_DEVICES], env=env, capture_output=True, text=True, timeout=240
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result == {"lapack": True, "devices": [0], "same": True}


@pytest.mark.parametrize("devices", [0, "too many", "cpu", [None]])
def test_bad_devices(devices):
    m = jaxmm.fit(DY, jaxmm.dataset("dyestuff"))
    devices = len(jax.local_devices()) + 1 if devices == "too many" else devices
    with pytest.raises(ValueError, match="devices"):
        jaxmm.parametricbootstrap(SEED, 10, m, devices=devices)
