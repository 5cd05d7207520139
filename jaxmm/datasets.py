"""Real data sets shipped with jaxmm (from lme4's R package, columns named as in MixedModels.jl)."""

from __future__ import annotations

from importlib import resources

# Columns that are factors in lme4; some hold codes that look like numbers, so they are read as strings.
_FACTORS: dict[str, tuple[str, ...]] = {
    "cake": ("replicate", "recipe", "temperature"),
    "cbpp": ("herd", "period"),
    "dyestuff": ("batch",),
    "dyestuff2": ("batch",),
    "grouseticks": ("index", "brood", "location", "year"),
    "insteval": ("s", "d", "dept", "studage", "lectage", "service"),
    "pastes": ("batch", "cask", "sample"),
    "penicillin": ("plate", "sample"),
    "sleepstudy": ("subj",),
    "verbagg": ("gender", "item", "resp", "id", "btype", "situ", "mode", "r2"),
}
_FILES = {name: f"{name}.csv.gz" if name == "insteval" else f"{name}.csv" for name in _FACTORS}


def datasets() -> list[str]:
    """Names of the shipped data sets, for `dataset(name)`."""
    return sorted(_FACTORS)


def dataset(name: str):
    """Load a shipped data set as a pandas DataFrame; `name` is case-insensitive.

    Factor columns are pandas categoricals (levels in sorted order, as R orders them).
    """
    import pandas as pd  # here, not at the top: `import jaxmm` loads no pandas

    key = str(name).lower()
    if key not in _FILES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(datasets())}")
    path = resources.files("jaxmm") / "data" / _FILES[key]
    factors = _FACTORS[key]
    with resources.as_file(path) as file:
        df = pd.read_csv(file, dtype={c: str for c in factors})
    for col in factors:
        df[col] = pd.Categorical(df[col], categories=_r_level_order(df[col].unique()))
    return df


def _r_level_order(levels) -> list[str]:
    """R's factor() sorts numeric-looking codes numerically and everything else lexically."""
    try:
        return sorted(levels, key=float)
    except ValueError:
        return sorted(levels)
