"""Bootstrap replicates on disk: a Parquet or Arrow table and the signature of the model they belong to.

Layout: columns objective, σ, converged, niter, β1.., se1.., θ1.. (and statistic1.., the
flattened statistic, if any), and schema metadata key "jaxmm" holding JSON with the model's
signature, the simulation parameters, the replicates' provenance, the row count, a SHA-256
checksum of the columns' bytes (and the statistic's shape). A file is checked on reading: its
checksum, its row count and its values (theta within its bounds, converged fits finite).
The extension names the format: .parquet, .arrow / .feather (restorable), .csv (samp.tbl only).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from .display import numbered
from .mixedmodel import MixedModel
from .replicates import Replicates

_FORMAT = 2  # 1: no checksum, row count or provenance
_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".csv": "csv"}


def output_format(path) -> str:
    """'parquet' or 'arrow' (restorable files) or 'csv' (the table), by the extension of path."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{path}: a bootstrap file must end in .parquet, .arrow, .feather or .csv")
    return _FORMATS[suffix]


def checksum(columns: dict[str, np.ndarray]) -> str:
    """SHA-256 of the columns' names, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for name, values in columns.items():
        values = np.ascontiguousarray(values)
        digest.update(f"{name}:{values.dtype.str}:".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def signature(m: MixedModel) -> dict:
    """What makes two bootstraps comparable: the model's formula, estimation method and data, and
    the model kind's own settings (`m.family_settings`: a generalized linear mixed model's family,
    link and fast setting; a linear mixed model has none, its family being "gaussian")."""
    digest = hashlib.sha256(np.ascontiguousarray(m.design.y).tobytes())
    digest.update(np.ascontiguousarray(m.design.x).tobytes())
    sig = {
        "formula": m.formula,
        "REML": m.REML,
        "nobs": m.nobs,
        "coefnames": list(m.coefnames),
        "terms": [[t.group, list(t.columns), t.nlevels] for t in m.structure.terms],
        "data": digest.hexdigest()[:16],
    }
    sig.update(m.family_settings)
    return sig


def signature_difference(ours: dict, theirs: dict) -> tuple[str, object, object] | None:
    """The first entry in which two signatures differ, with both values (None: they agree)."""
    lmm = {"family": "gaussian", "fast": None}
    for key in list(ours) + [k for k in theirs if k not in ours]:
        a, b = ours.get(key, lmm.get(key)), theirs.get(key, lmm.get(key))
        if a != b:
            return key, a, b
    return None


def save_replicates(
    path, r: Replicates, m: MixedModel, sim: tuple, statistic: np.ndarray | None, provenance: tuple = ()
) -> None:
    """Write the replicates of a bootstrap of m (simulated at `sim`) to a Parquet or Arrow file."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    fmt = output_format(path)
    if fmt == "csv":
        raise ValueError(f"{path}: replicates are saved to .parquet or .arrow; .csv holds samp.tbl only")
    cols = {"objective": r.objective, "σ": r.sigma, "converged": r.converged, "niter": r.niter}
    for name, arr in (("β", r.beta), ("se", r.se), ("θ", r.theta)):
        cols.update(zip(numbered(name, arr.shape[1]), arr.T))
    meta = {"model": signature(m), "sim": [np.asarray(s).tolist() for s in sim], "format": _FORMAT}
    meta["replicates"] = [[list(key), first, count] for key, first, count in provenance]
    if statistic is not None:
        flat = statistic.reshape(len(statistic), -1)
        cols.update(zip(numbered("statistic", flat.shape[1]), flat.T))
        meta["statistic_shape"] = list(statistic.shape[1:])
    meta.update(nsamp=len(r), checksum=checksum(cols))
    table = pa.table(cols).replace_schema_metadata({b"jaxmm": json.dumps(meta).encode()})
    if fmt == "parquet":
        pq.write_table(table, str(path))
    else:
        feather.write_feather(table, str(path), compression="uncompressed")


def read_replicates(path, m: MixedModel) -> tuple[Replicates, tuple, np.ndarray | None, tuple]:
    """The replicates, simulation parameters, statistic (or None) and provenance saved in `path` for the model
    m, checked against m's signature; a ValueError naming the file if it is not such a file."""
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    path = Path(path)
    fmt = output_format(path)
    if fmt == "csv":
        raise ValueError(f"{path} is a table (samp.tbl), not restorable: save replicates as .parquet or .arrow")
    try:
        table = pq.read_table(str(path)) if fmt == "parquet" else feather.read_table(str(path))
        metadata = table.schema.metadata or {}
        if b"jaxmm" not in metadata:
            raise ValueError("it has no jaxmm metadata")
        meta = json.loads(metadata[b"jaxmm"])
        if not isinstance(meta, dict):
            raise ValueError(f"its jaxmm metadata is a {type(meta).__name__}, not an object")
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path} is not a jaxmm bootstrap file: {err}") from None
    theirs = meta.get("model")
    diff = signature_difference(signature(m), theirs if isinstance(theirs, dict) else {})
    if diff is not None:
        key, ours, theirs = diff
        raise ValueError(f"{path} holds a bootstrap of another model: its {key} is {theirs!r}, the model's is {ours!r}")
    df = table.to_pandas()
    p, nt = len(m.coefnames), m.structure.ntheta
    required = ["objective", "σ", "converged", "niter", *numbered("β", p), *numbered("se", p), *numbered("θ", nt)]
    absent = [c for c in required if c not in df]
    if absent:
        raise ValueError(f"{path} is damaged: it has no column {absent[0]!r}")
    if "nsamp" in meta and meta["nsamp"] != len(df):
        raise ValueError(f"{path} is damaged: it has {len(df)} replicates, it was written with {meta['nsamp']}")
    if "checksum" in meta and checksum({name: df[name].to_numpy() for name in df.columns}) != meta["checksum"]:
        raise ValueError(f"{path} is damaged: its contents do not match the checksum it was written with")
    reps = Replicates(
        objective=df["objective"].to_numpy(),
        beta=df[numbered("β", p)].to_numpy(),
        se=df[numbered("se", p)].to_numpy(),
        sigma=df["σ"].to_numpy(),
        theta=df[numbered("θ", nt)].to_numpy(),
        converged=df["converged"].to_numpy(dtype=bool),
        niter=df["niter"].to_numpy(),
    )
    _check_values(path, reps, m)
    statistic = None
    if "statistic_shape" in meta:
        shape = tuple(meta["statistic_shape"])
        names = numbered("statistic", math.prod(shape))
        if any(c not in df for c in names):
            raise ValueError(f"{path} is damaged: it lacks statistic columns")
        statistic = df[names].to_numpy().reshape(len(df), *shape)
    try:
        provenance = tuple(
            (tuple(int(k) for k in key), int(first), int(count)) for key, first, count in meta.get("replicates", ())
        )
    except (TypeError, ValueError):
        raise ValueError(f"{path} is damaged: its replicate provenance is unreadable") from None
    return reps, tuple(np.asarray(s) for s in meta.get("sim", ())), statistic, provenance


def _check_values(path, reps: Replicates, m: MixedModel) -> None:
    """What any bootstrap of m satisfies: theta within its lower bounds, converged fits finite, counts >= 0."""
    below = np.any(reps.theta < m.lowerbd, axis=1)
    if below.any():
        raise ValueError(f"{path} is damaged: replicate {int(np.argmax(below))} has theta below its lower bound")
    done = reps.converged
    finite = np.isfinite(reps.objective) & np.all(np.isfinite(reps.theta), axis=1)
    if np.any(done & ~finite):
        raise ValueError(f"{path} is damaged: replicate {int(np.argmax(done & ~finite))} is converged but not finite")
    if np.any(reps.niter < 0):
        raise ValueError(f"{path} is damaged: a negative iteration count")
