"""m.optsum.compile_s: the seconds a fit spends compiling, > 0 for a shape not compiled yet in the
process and 0.0 when the compiled code is reused (LMM and GLMM); and jaxmm._compile's executable
store: a fresh process loads what an earlier one compiled (no tracing), bit for bit the same, and a
corrupt entry is compiled again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxmm
from jaxmm import _compile


def test_a_new_shape_reports_its_compile_and_a_repeat_reports_none():
    sleep = jaxmm.dataset("sleepstudy").iloc[:173]  # a number of rows no other test fits
    first = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", sleep)
    again = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", sleep)
    assert first.optsum.compile_s > 0.0 and again.optsum.compile_s == 0.0
    assert again.optsum.compile_s <= first.optsum.compile_s


def test_a_glmm_fit_reports_its_compile():
    cbpp = jaxmm.dataset("cbpp").iloc[:53]
    cbpp = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    fits = [jaxmm.fit("prop ~ 1 + period + (1|herd)", cbpp, family="binomial", weights="size") for _ in range(2)]
    assert fits[0].optsum.compile_s > 0.0 and fits[1].optsum.compile_s == 0.0


# A fresh process: fit dyestuff, print what JAX traced and the fit's numbers (their bits, as hex).
_FRESH_FIT = """
import json, jax, jaxmm
traced = []
jax.monitoring.register_event_time_span_listener(
    lambda event, start, end, fun_name=None, **kw: traced.append(fun_name) if event.endswith("trace_duration") else None
)
m = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff").iloc[:29])
numbers = [m.optsum.fmin, *m.theta, *m.beta, m.sigma, *m.stderror]
print(json.dumps({"traced": traced, "compile_s": m.optsum.compile_s, "bits": [float(x).hex() for x in numbers]}))
"""


def _fresh_fit(cache) -> dict:
    env = {**os.environ, "JAXMM_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", _FRESH_FIT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_a_fresh_process_loads_the_executable_an_earlier_one_compiled(tmp_path):
    cold, warm = _fresh_fit(tmp_path), _fresh_fit(tmp_path)
    off = _fresh_fit("")  # no caching: compiled afresh
    traced = [[name for name in run["traced"] if name.endswith("_fit_model")] for run in (cold, warm)]
    assert traced == [["stored__fit_model"], []]  # the cold process traced the fit (for the store), the warm one not
    assert list((tmp_path / "executables").glob("*.jaxexe"))
    assert 0.0 < warm["compile_s"] < cold["compile_s"]  # loading counts, and costs less than compiling
    assert cold["bits"] == warm["bits"] == off["bits"]


def _scaled(x, structure):
    return x * structure.n


# A fresh process on `devices` CPU devices: fit dyestuff, bootstrap it over every device (with a statistic, a
# closure, where asked: a kernel the store cannot name), print what JAX traced and the table's bits.
_FRESH_BOOTSTRAP = """
import json, sys, jax
jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
import jaxmm
traced = []
jax.monitoring.register_event_time_span_listener(
    lambda event, start, end, fun_name=None, **kw: traced.append(fun_name) if event.endswith("trace_duration") else None
)
m = jaxmm.fit("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff").iloc[:29])
scale = 2.0
statistic = (lambda r: scale * r.beta) if sys.argv[2] == "statistic" else None
samp = jaxmm.parametricbootstrap(3, 1100, m, progress=False, devices=jax.device_count(), statistic=statistic)
bits = samp.tbl.to_numpy().tobytes().hex() + ("" if statistic is None else samp.statistic.tobytes().hex())
print(json.dumps({"traced": traced, "devices": jax.device_count(), "bits": bits}))
"""


def _fresh_bootstrap(cache, devices: int, statistic: bool = False) -> dict:
    env = {**os.environ, "JAXMM_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-c", _FRESH_BOOTSTRAP, str(devices), "statistic" if statistic else ""]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_several_devices_run_one_compiled_kernel_and_a_later_process_loads_it(tmp_path):
    """The bootstrap kernel is compiled once, for the first device; the other device loads that executable (its
    device assignment given again), and a later process loads it for both instead of tracing. The table is the
    one of a single device."""
    cold, warm, single = _fresh_bootstrap(tmp_path, 2), _fresh_bootstrap(tmp_path, 2), _fresh_bootstrap("", 1)
    assert cold["devices"] == warm["devices"] == 2
    kernels = [[name for name in run["traced"] if name.endswith("_fit_replicates")] for run in (cold, warm)]
    assert kernels == [["stored__fit_replicates"], []]
    assert not [name for name in warm["traced"] if name.endswith("_fit_model")]
    assert cold["bits"] == warm["bits"] == single["bits"]


def test_a_kernel_the_store_cannot_name_is_compiled_once_for_every_device(tmp_path):
    """A statistic that is a closure has no stable description: its kernel is not stored, and the other device
    loads the executable the first compiled, kept in memory."""
    two, one = _fresh_bootstrap(tmp_path, 2, statistic=True), _fresh_bootstrap("", 1, statistic=True)
    assert [name for name in two["traced"] if name.endswith("_fit_replicates")] == ["stored__fit_replicates"]
    assert two["bits"] == one["bits"]


def test_a_corrupt_entry_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMM_CACHE_DIR", str(tmp_path))
    structure = jaxmm.LinearMixedModel("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff")).structure
    x = np.arange(3.0)
    with _compile.computing():
        assert np.array_equal(_compile.jit(_scaled, ("structure",))(x, structure=structure), 30.0 * x)
        (entry,) = (tmp_path / "executables").glob("*.jaxexe")
        good = entry.read_bytes()
        for damaged in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b""):
            entry.write_bytes(damaged)
            store = _compile.executable_store()
            assert store.read(entry) is None
            # a new wrapper (a new process, as far as the in-memory executables go) compiles and stores again
            assert np.array_equal(_compile.jit(_scaled, ("structure",))(x, structure=structure), 30.0 * x)
            assert store.read(entry) is not None


def test_a_static_argument_without_a_stable_description_is_compiled_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMM_CACHE_DIR", str(tmp_path))
    structure = jaxmm.LinearMixedModel("yield ~ 1 + (1|batch)", jaxmm.dataset("dyestuff")).structure
    offset = 2.0

    def shifted(x, structure, shift):
        return x + shift(structure.n)

    jitted = _compile.jit(shifted, ("structure", "shift"))
    with _compile.computing():
        out = jitted(np.zeros(2), structure=structure, shift=lambda n: n + offset)
    assert np.array_equal(out, [32.0, 32.0])
    assert not list(tmp_path.glob("executables/*.jaxexe"))


@pytest.mark.parametrize(
    "value",
    [jaxmm.solver.SolverOptions(), (1, 2.5, "a", None), np.arange(3), {"b": 1, "a": (True,)}, _compile.is_small],
)
def test_stable_descriptions_are_the_same_in_another_process(value):
    code = (
        "import numpy as np, jaxmm, jaxmm.solver; from jaxmm import _compile; "
        f"print(_compile._stable({_source(value)}))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == _compile._stable(value)


def _source(value) -> str:
    if isinstance(value, np.ndarray):
        return "np.arange(3)"
    if callable(value):
        return "_compile.is_small"
    return repr(value).replace("SolverOptions", "jaxmm.solver.SolverOptions")
