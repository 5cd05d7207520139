"""Determinism of the bootstrap for a model with a vector-valued random effect (sleepstudy).

tests/test_bootstrap.py checks dyestuff (a scalar random effect). Here, with a 2 x 2 lambda and
replicates continued over several compiled calls:
- two runs of one seed are bit-identical, and so is replicate i whatever nsamp (a run is a prefix
  of a longer one) and whatever batch_size: every kernel call has the model's lane width, since
  XLA on the CPU vectorises a different number of lanes differently (in the last bits).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxmm
from jaxmm._compile import computing
from jaxmm.bootstrap import ROUND_MAXITER
from jaxmm.bootstrap.api import seed_key

SS = "reaction ~ 1 + days + (1 + days|subj)"
NSAMP = 40  # as in test_bootstrap.py, so that the default batch shape is compiled once
SEED = 4
BATCH_SIZES = (3, 300)  # besides the default: rounded up to one and to three calls of 128 lanes


@pytest.fixture(scope="module")
def ss():
    return jaxmm.fit(SS, jaxmm.dataset("sleepstudy"))


@pytest.fixture(scope="module")
def runs(ss):
    def run(nsamp=NSAMP, batch_size=None):
        return jaxmm.parametricbootstrap(SEED, nsamp, ss, progress=False, batch_size=batch_size)

    return {
        "default": run(),
        "again": run(),
        "longer": run(3 * NSAMP),
        **{size: run(batch_size=size) for size in BATCH_SIZES},
    }


def _bits(samp) -> np.ndarray:
    return samp.tbl.to_numpy().view(np.uint64)


def test_two_runs_are_bit_identical(runs):
    np.testing.assert_array_equal(_bits(runs["again"]), _bits(runs["default"]))
    np.testing.assert_array_equal(runs["again"].replicates.niter, runs["default"].replicates.niter)
    assert (runs["default"].replicates.niter > ROUND_MAXITER).any()  # continued fits are among them


def test_a_run_is_a_prefix_of_a_longer_one(runs):
    np.testing.assert_array_equal(_bits(runs["longer"])[:NSAMP], _bits(runs["default"]))
    np.testing.assert_array_equal(runs["longer"].replicates.niter[:NSAMP], runs["default"].replicates.niter)


@pytest.mark.parametrize("size", BATCH_SIZES)
def test_batch_size_changes_no_bit(runs, size):
    np.testing.assert_array_equal(_bits(runs[size]), _bits(runs["default"]))
    np.testing.assert_array_equal(runs[size].replicates.niter, runs["default"].replicates.niter)


@pytest.mark.parametrize("seed", [0, 42, -1, 2**32, 2**32 + 7, 2**63 - 1, -(2**63)])
def test_a_seed_gives_the_key_of_jax_random_key(seed):
    with computing():
        expected = jax.random.key_data(jax.random.key(seed))
        got = jax.random.key_data(seed_key(seed))
    np.testing.assert_array_equal(got, expected)
