"""Checkpoints of a running bootstrap: the replicates finished so far, written as they finish, so that
an interrupted run (Ctrl-C, a Colab session that disconnects, a pre-empted job) resumes where it
stopped. Replicate i depends on (seed, i) alone, so a resumed run is bit-identical to an
uninterrupted one.

The file is NumPy's .npz: the replicate arrays (all nsamp rows), the mask of finished ones, the
statistic's values if any, and a JSON description of the run (the model's signature, the seed's
key, nsamp, the simulation parameters and the settings that change a replicate's numbers). It is
written to a temporary name and renamed, so a run killed while writing leaves the previous file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from .. import io
from ..mixedmodel import MixedModel
from ..replicates import Replicates

WRITE_EVERY_S = 2.0


class Checkpoint:
    """The finished replicates of one run, kept in memory and on disk at `path`."""

    def __init__(self, path, run: dict, replicates: Replicates, done: np.ndarray, statistic: np.ndarray | None):
        self.path, self.run = Path(path), run
        self.replicates, self.done, self.statistic = replicates, done, statistic
        self._written = time.monotonic()

    @classmethod
    def open(cls, path, m: MixedModel, run: dict) -> Checkpoint:
        """The checkpoint at `path` of the run described by `run` (checked against the file's), or
        a new, empty one if there is no file yet."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ValueError(f"checkpoint {path}: no such directory {path.parent}")
        run = {"model": io.signature(m), **json.loads(json.dumps(run))}
        if not path.exists():
            return cls(path, run, Replicates.empty(run["nsamp"], m), np.zeros(run["nsamp"], dtype=bool), None)
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            theirs = json.loads(str(arrays.pop("run")))
        except Exception as err:
            raise ValueError(f"checkpoint {path} is not a jaxmm checkpoint: {err}") from None
        for key in run.keys() | theirs.keys():
            if run.get(key) != theirs.get(key):
                raise ValueError(
                    f"checkpoint {path} is of another run: its {key} is {theirs.get(key)!r}, this run's is "
                    f"{run.get(key)!r} (remove the file to start afresh)"
                )
        replicates = Replicates(**{f.name: arrays[f.name] for f in fields(Replicates)})
        return cls(path, run, replicates, arrays["done"], arrays.get("statistic"))

    def record(self, numbers: np.ndarray, part: Replicates, statistic: np.ndarray | None) -> None:
        """Keep finished replicates `numbers` (their rows in `part`); write the file every few seconds."""
        self.replicates.put(numbers, part)
        if statistic is not None:
            if self.statistic is None:
                self.statistic = np.full((len(self.done), *statistic.shape[1:]), np.nan, dtype=statistic.dtype)
            self.statistic[numbers] = statistic
        self.done[numbers] = True
        if time.monotonic() - self._written >= WRITE_EVERY_S:
            self.write()

    def write(self) -> None:
        arrays = {f.name: getattr(self.replicates, f.name) for f in fields(Replicates)}
        if self.statistic is not None:
            arrays["statistic"] = self.statistic
        temporary = self.path.with_name(self.path.name + ".partial.npz")
        np.savez(temporary, done=self.done, run=np.array(json.dumps(self.run)), **arrays)
        os.replace(temporary, self.path)
        self._written = time.monotonic()
