"""Determinism of the bootstrap for a model with a vector-valued random effect (sleepstudy).

tests/test_bootstrap.py checks dyestuff (a scalar random effect): bit-identical tables across
batch sizes and runs, different tables for different seeds. A 2 x 2 lambda adds what a scalar
model does not exercise: XLA on the CPU picks its code for small vmapped products (u lambda',
sum(x * beta)) by the vmapped width, rounding the last bit differently, so the width must not
follow the batch size; and some replicates are continued over several compiled calls.
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxmm
from jaxmm.bootstrap import ROUND_MAXITER

SS = "reaction ~ 1 + days + (1 + days|subj)"
NSAMP = 40  # as in test_bootstrap.py, so that the default batch shape is compiled once
SEED = 4
BATCH_SIZES = (3, 16)  # besides the default


@pytest.fixture(scope="module")
def ss():
    return jaxmm.fit(SS, jaxmm.dataset("sleepstudy"))


@pytest.fixture(scope="module")
def runs(ss):
    def run(batch_size=None):
        return jaxmm.parametricbootstrap(SEED, NSAMP, ss, progress=False, batch_size=batch_size)

    return {"default": run(), "again": run(), **{size: run(size) for size in BATCH_SIZES}}


def _bits(samp) -> np.ndarray:
    return samp.tbl.to_numpy().view(np.uint64)


def test_two_runs_are_bit_identical(runs):
    np.testing.assert_array_equal(_bits(runs["again"]), _bits(runs["default"]))
    np.testing.assert_array_equal(runs["again"].replicates.niter, runs["default"].replicates.niter)
    assert (runs["default"].replicates.niter > ROUND_MAXITER).any()  # continued fits are among them


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_batch_size_changes_no_bit(runs, size):
    np.testing.assert_array_equal(_bits(runs[size]), _bits(runs["default"]))
    np.testing.assert_array_equal(runs[size].replicates.niter, runs["default"].replicates.niter)
