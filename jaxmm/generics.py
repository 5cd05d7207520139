"""Free functions in MixedModels.jl's style, each taking a fitted model, a profile or a bootstrap
where that makes sense: confint, shortestcovint, issingular, coeftable, fixef, ranef, vcov.
Each dispatches to the object's own method (the one place its computation lives)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .mixedmodel import MixedModel
from .profiling import MixedModelProfile
from .results import MixedModelBootstrap
from .results import shortestcovint as _shortest


def shortestcovint(x, level: float = 0.95):
    """The shortest interval holding ceil(n level) of the values: of a vector, (lower, upper); of a
    bootstrap, one row per parameter (type, group, names, lower, upper)."""
    if isinstance(x, MixedModelBootstrap):
        return x.shortestcovint(level)
    return _shortest(x, level)


def confint(x, level: float = 0.95, **kwargs) -> pd.DataFrame:
    """Intervals as type, group, names, lower, upper: a model's (m.confint: method 'wald', 'profile',
    'boot'), a profile's, or a bootstrap's shortest coverage intervals (samp.shortestcovint; its
    confint(method=...) has tbl's names instead)."""
    if isinstance(x, MixedModel):
        return x.confint(level, **kwargs)
    if isinstance(x, MixedModelProfile):
        return x.confint(level)
    if isinstance(x, MixedModelBootstrap):
        return x.shortestcovint(level)
    raise ValueError(f"confint takes a fitted model, a profile or a bootstrap, got {type(x).__name__}")


def issingular(x, atol: float = 0.0) -> bool | np.ndarray:
    """Whether some bounded theta is at its bound: a model's (bool) or each bootstrap replicate's (array)."""
    if isinstance(x, (MixedModel, MixedModelBootstrap)):
        return x.issingular(atol)
    raise ValueError(f"issingular takes a fitted model or a bootstrap, got {type(x).__name__}")


def _model(x, what: str) -> MixedModel:
    if not isinstance(x, MixedModel):
        raise ValueError(f"{what} takes a fitted model, got {type(x).__name__}")
    return x


def coeftable(m, **kwargs) -> pd.DataFrame:
    """m.coeftable(): estimate, standard error, test statistic and p-value per coefficient."""
    return _model(m, "coeftable").coeftable(**kwargs)


def fixef(m) -> pd.Series:
    """m.fixef: the fixed-effects estimates by coefficient name."""
    return _model(m, "fixef").fixef


def ranef(m, condvar: bool = False) -> dict[str, pd.DataFrame]:
    """m.ranef(condvar): the conditional modes per grouping factor (and their conditional covariances)."""
    return _model(m, "ranef").ranef(condvar)


def vcov(m) -> pd.DataFrame:
    """m.vcov: Cov(beta-hat) by coefficient name."""
    return _model(m, "vcov").vcov
