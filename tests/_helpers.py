"""Checks shared by the bootstrap test files."""

from __future__ import annotations

import numpy as np
import pandas as pd

import jaxmm

REPLICATE_FIELDS = ("objective", "beta", "se", "sigma", "theta", "converged", "niter")


def same(a, b) -> bool:
    """Bit-identical numeric arrays/frames (NaN equal to NaN, -0.0 distinct from 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.all((a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")) | (np.isnan(a) & np.isnan(b))))
    return bool(np.array_equal(a, b))


def assert_restores(samp, m, path):
    """samp.save(path) then jaxmm.restorereplicates(path, m) gives back samp exactly; returns it."""
    samp.save(path)
    back = jaxmm.restorereplicates(path, m)
    pd.testing.assert_frame_equal(back.tbl, samp.tbl, check_exact=True)
    for name in REPLICATE_FIELDS:
        assert same(getattr(back.replicates, name), getattr(samp.replicates, name)), name
    return back
