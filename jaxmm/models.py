"""The front door: `jaxmm.fit(formula, data, ...)` builds and fits the model its arguments name, a
linear mixed model (jaxmm/lmm.py) or, given a family, a generalized one (jaxmm/glmm/)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .glmm import GeneralizedLinearMixedModel
from .lmm import LinearMixedModel


def fit(
    formula: str,
    data: pd.DataFrame,
    *,
    REML: bool = False,
    optsum_overrides: dict[str, Any] | None = None,
    family: str | None = None,
    link: str | None = None,
    weights=None,
    offset=None,
    fast: bool = False,
    nAGQ: int = 1,
) -> LinearMixedModel | GeneralizedLinearMixedModel:
    """Fit a linear mixed model by ML (default) or REML, with lme4's formula syntax; with `family`
    ("bernoulli", "binomial", "poisson", "negativebinomial" or "nbinom2", "gamma"), a generalized linear
    mixed model by the Laplace approximation or, with nAGQ > 1, adaptive Gauss-Hermite quadrature
    (jaxmm.GeneralizedLinearMixedModel; `link`, `weights`, `fast`, `nAGQ`); the negative binomial's k and
    the Gamma's dispersion are estimated with the other parameters.

    `offset` (both kinds) and `weights` (a linear mixed model's prior weights, residual variance
    sigma^2 / w_i, lmer's; a binomial GLMM's trials): a column name or one value per row of data.

    >>> m = jaxmm.fit("reaction ~ 1 + days + (1 + days|subj)", jaxmm.dataset("sleepstudy"))
    """
    if family is None or (isinstance(family, str) and family.lower() == "gaussian"):
        if link not in (None, "identity") or fast is not False or nAGQ != 1:
            raise ValueError(
                "link, fast and nAGQ apply to a generalized linear mixed model "
                "(family='bernoulli', 'binomial', 'poisson', 'negativebinomial' or 'gamma')"
            )
        model = LinearMixedModel(formula, data, REML=REML, weights=weights, offset=offset)
        return model.fit(optsum_overrides=optsum_overrides)
    if REML is not False:
        raise ValueError(f"REML applies to linear mixed models; a generalized one (family={family!r}) is fitted by ML")
    model = GeneralizedLinearMixedModel(formula, data, family, link=link, weights=weights, offset=offset)
    return model.fit(fast=fast, nAGQ=nAGQ, optsum_overrides=optsum_overrides)
