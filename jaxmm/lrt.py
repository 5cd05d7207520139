"""Likelihood-ratio tests of nested models: the classical chi-square test, and the parametric
bootstrap of the likelihood-ratio statistic (pbkrtest's PBmodcomp).

For fitted models m_small (nested in) m_large, the statistic is the difference of their
deviances, LRT = -2 log L_small - (-2 log L_large) >= 0, with df = dof_large - dof_small
(fixed effects + theta + sigma).

- `likelihoodratiotest` refers LRT to chi-square(df): right for fixed effects in large samples,
  conservative for variance components, whose null value lies on the boundary of the parameter
  space (a mixture of chi-squares is the asymptotic law, and only in simple cases).
- `pblrt` simulates responses from the fitted small model, fits both models to each and takes
  the distribution of LRT* over the replicates as the reference: the p-value is the share of
  replicates at least as extreme as the observed LRT.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import display
from ._warn import warn
from .bootstrap.api import check_fitted, simulate_and_refit
from .covariance import covariance_pattern
from .lmm import LinearMixedModel
from .results import MixedModelBootstrap


def _estimable_names(design) -> list[str]:
    return [name for name, keep in zip(design.coefnames, design.estimable) if keep]


def check_nested(m_small: LinearMixedModel, m_large: LinearMixedModel) -> None:
    """Raise a ValueError unless m_small is nested in m_large, checked as:

    - same data: the same number of observations and the same response values;
    - fixed effects: every estimable column of m_small's X is a column of m_large's X with the same
      name and the same values (nesting by a reparametrisation, e.g. x in C(x), is not recognised);
    - random effects: for each term of m_small, m_large has a term on the same grouping factor
      (same name, same levels per row) with every column of m_small's term, equal in value, and
      every covariance m_small's term estimates (so (1|g) + (0+x|g) is nested in (1+x|g));
    - m_small has fewer parameters than m_large."""
    ds, dl = m_small.design, m_large.design
    if m_small.nobs != m_large.nobs or not np.array_equal(ds.y, dl.y):
        raise ValueError(
            f"m_small and m_large are fitted to different data: {m_small.nobs} and {m_large.nobs} observations"
            + (", different responses" if m_small.nobs == m_large.nobs else "")
        )
    large_x = dict(zip(_estimable_names(dl), dl.x.T))
    for name, column in zip(_estimable_names(ds), ds.x.T):
        if name not in large_x or not np.array_equal(column, large_x[name]):
            raise ValueError(
                f"m_small is not nested in m_large: its fixed-effects column {name!r} is not one of m_large's"
            )
    large_terms = {
        t.group: (t, refs, z) for t, refs, z in zip(m_large.structure.terms, dl.matrices.refs, dl.matrices.z)
    }
    for t, refs, z in zip(m_small.structure.terms, ds.matrices.refs, ds.matrices.z):
        if t.group not in large_terms:
            raise ValueError(f"m_small is not nested in m_large: m_large has no random-effects term on {t.group!r}")
        tl, refs_l, z_l = large_terms[t.group]
        same_columns = all(
            c in tl.columns and np.array_equal(z[:, i], z_l[:, tl.columns.index(c)]) for i, c in enumerate(t.columns)
        )
        if not np.array_equal(refs, refs_l) or not same_columns or not covariance_pattern(t) <= covariance_pattern(tl):
            raise ValueError(
                f"m_small is not nested in m_large: its random-effects term on {t.group!r} ({', '.join(t.columns)}) "
                f"is not contained in m_large's ({', '.join(tl.columns)})"
            )
    if m_small.dof >= m_large.dof:
        raise ValueError(f"m_small is not nested in m_large: it has {m_small.dof} parameters, m_large {m_large.dof}")


def _comparable_fits(m_small: LinearMixedModel, m_large: LinearMixedModel) -> tuple[LinearMixedModel, LinearMixedModel]:
    """The fits whose criteria can be compared: the models as given when both are ML fits, or both
    REML fits with the same fixed effects; otherwise ML refits of the REML ones (with a warning),
    since REML criteria of models with different fixed effects are likelihoods of different data."""
    same_fixed = m_small.design.coefnames == m_large.design.coefnames and np.array_equal(
        m_small.design.x, m_large.design.x
    )
    if not (m_small.REML or m_large.REML) or (m_small.REML and m_large.REML and same_fixed):
        return m_small, m_large
    warn(
        "refitting the REML fit(s) by maximum likelihood (as pbkrtest and lme4's anova do): REML criteria "
        "are comparable only between models with the same fixed effects, both fitted by REML",
        UserWarning,
    )
    return tuple(copy.copy(m).fit(REML=False) if m.REML else m for m in (m_small, m_large))


def _statistic(small: LinearMixedModel, large: LinearMixedModel) -> float:
    # A small model on the boundary of the large one (a variance component tested at 0) can fit
    # as well as the large model; the difference is then 0 up to the solvers' rounding and may come
    # out slightly negative. The likelihood ratio cannot be below 1: clamp at 0.
    return max(small.objective - large.objective, 0.0)


@dataclass(frozen=True)
class LikelihoodRatioTest:
    """The classical likelihood-ratio test of m_small against m_large (MixedModels.jl's LikelihoodRatioTest).

    formulas, dof, objective: of (small, large); objective is -2 log L (or the REML criterion,
    when reml); lrt = objective[0] - objective[1] (at least 0); df = dof[1] - dof[0];
    pvalue = P(chi-square(df) >= lrt)."""

    formulas: tuple[str, str]
    nobs: int
    reml: bool
    dof: tuple[int, int]
    objective: tuple[float, float]
    lrt: float
    df: int
    pvalue: float

    def __repr__(self) -> str:
        return display.lrt_table(self)

    def _repr_html_(self) -> str:
        return display.lrt_html(self)


def likelihoodratiotest(m_small: LinearMixedModel, m_large: LinearMixedModel) -> LikelihoodRatioTest:
    """Likelihood-ratio test of the fitted model m_small nested in m_large (lme4's anova(m_small, m_large)).

    lrt = deviance(m_small) - deviance(m_large), df the difference of their parameter counts
    (fixed effects + theta + sigma), p = P(chi-square(df) >= lrt). Nesting is checked as
    `check_nested` describes; REML fits are compared by their REML criteria only when both are
    REML fits with the same fixed effects, otherwise refitted by ML (with a warning)."""
    return _test(m_small, m_large)[0]


def _test(
    m_small: LinearMixedModel, m_large: LinearMixedModel
) -> tuple[LikelihoodRatioTest, LinearMixedModel, LinearMixedModel]:
    """The classical test and the two fits it compares (ML refits of REML fits, if needed)."""
    check_fitted("m_small", m_small, LinearMixedModel)
    check_fitted("m_large", m_large, LinearMixedModel)
    check_nested(m_small, m_large)
    small, large = _comparable_fits(m_small, m_large)
    lrt, df = _statistic(small, large), large.dof - small.dof
    test = LikelihoodRatioTest(
        formulas=(small.formula, large.formula),
        nobs=small.nobs,
        reml=small.REML,
        dof=(small.dof, large.dof),
        objective=(small.objective, large.objective),
        lrt=lrt,
        df=df,
        pvalue=float(sps.chi2.sf(lrt, df)),
    )
    return test, small, large


@dataclass(frozen=True)
class BootstrapLikelihoodRatioTest:
    """The parametric-bootstrap likelihood-ratio test (`pblrt`), with pbkrtest's PBmodcomp summaries.

    test: the classical test (observed lrt, df, pvalue_chisq = test.pvalue).
    reference: LRT* of the used replicates (both fits converged), in replicate order; used: the
    mask over all nsamp replicates; fits: the replicate fits of (small, large) as bootstraps.
    pvalue_bootstrap = (1 + #{LRT* >= lrt}) / (1 + nused).
    pvalue_bartlett, pvalue_gamma: as pbkrtest's summary(PBmodcomp(...)), from the mean E and
    variance V of the positive LRT*: P(chi-square(df) >= df lrt / E) and P(Gamma >= lrt) for the
    Gamma law with that mean and variance (shape E^2/V, scale V/E).
    """

    test: LikelihoodRatioTest
    reference: np.ndarray
    used: np.ndarray
    fits: tuple[MixedModelBootstrap, MixedModelBootstrap]

    @property
    def lrt(self) -> float:
        return self.test.lrt

    @property
    def df(self) -> int:
        return self.test.df

    @property
    def nsamp(self) -> int:
        return len(self.used)

    @property
    def nused(self) -> int:
        return len(self.reference)

    @property
    def nfailed(self) -> int:
        return self.nsamp - self.nused

    @property
    def pvalue_chisq(self) -> float:
        return self.test.pvalue

    @property
    def pvalue_bootstrap(self) -> float:
        return (1 + int(np.sum(self.reference >= self.lrt))) / (1 + self.nused)

    def _moments(self) -> tuple[float, float]:
        # pbkrtest takes the moments of the positive LRT* only
        positive = self.reference[self.reference > 0]
        return float(np.mean(positive)), float(np.var(positive, ddof=1))

    @property
    def bartlett(self) -> float:
        """The Bartlett-corrected statistic df * lrt / E(LRT*)."""
        return self.df * self.lrt / self._moments()[0]

    @property
    def pvalue_bartlett(self) -> float:
        return float(sps.chi2.sf(self.bartlett, self.df))

    @property
    def pvalue_gamma(self) -> float:
        mean, var = self._moments()
        return float(sps.gamma.sf(self.lrt, mean**2 / var, scale=var / mean))

    def __repr__(self) -> str:
        return display.pblrt_table(self)

    def _repr_html_(self) -> str:
        return display.pblrt_html(self)


def pblrt(
    rng,
    nsamp: int,
    m_small: LinearMixedModel,
    m_large: LinearMixedModel,
    *,
    progress: bool = True,
    optsum_overrides=None,
    batch_size: int | None = None,
    devices=None,
) -> BootstrapLikelihoodRatioTest:
    """Parametric-bootstrap likelihood-ratio test of m_small nested in m_large: R's
    pbkrtest::PBmodcomp(m_large, m_small, nsim = nsamp).

    Simulates `nsamp` responses from the fitted m_small, fits both models to each (one compiled
    kernel simulates with m_small's matrices and fits both models' sufficient statistics, in
    vmapped batches as `parametricbootstrap`), and takes LRT* = deviance(small*) - deviance(large*)
    (clamped at 0) of every replicate whose two fits converged as the reference distribution.
    Right where chi-square is not: a variance component tested at 0 (a boundary), small samples.

    The fits are those `likelihoodratiotest` compares: ML, or REML when both models are REML fits
    with the same fixed effects (pbkrtest always refits by ML). rng, progress, optsum_overrides,
    batch_size, devices: as in `parametricbootstrap`; replicate i is the same whatever the batch.
    Unlike pbkrtest's PBtest, which counts only positive LRT* (so drops replicates where the
    small model fits as well as the large one), pvalue_bootstrap counts every used replicate.
    """
    test, small, large = _test(m_small, m_large)
    sim = (small.beta.to_numpy()[small.design.estimable], small.sigma, small.theta)
    (fit_small, fit_large), _ = simulate_and_refit(
        rng,
        nsamp,
        small,
        sim,
        (small, large),
        optsum_overrides=optsum_overrides,
        batch_size=batch_size,
        devices=devices,
        progress=progress,
    )
    used = fit_small.converged & fit_large.converged
    if not used.all():
        warn(
            f"{int((~used).sum())} of {nsamp} replicates had a fit that did not converge and are not used",
            RuntimeWarning,
        )
    # See _statistic: LRT* below 0 is rounding at the boundary.
    reference = np.maximum(fit_small.objective[used] - fit_large.objective[used], 0.0)
    fits = (MixedModelBootstrap(small, fit_small, sim=sim), MixedModelBootstrap(large, fit_large, sim=sim))
    return BootstrapLikelihoodRatioTest(test=test, reference=reference, used=used, fits=fits)


def anova(*models) -> pd.DataFrame:
    """lme4's anova(m1, m2, ...) of fitted models (LMMs or GLMMs of one family), each nested in the
    next (as check_nested checks; lme4 leaves that to the user): one row per model, by formula, in
    order of npar: npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq), where

        Chisq_k = max(deviance_{k-1} - deviance_k, 0),  Df_k = npar_k - npar_{k-1},
        Pr(>Chisq)_k = P(chi-square(Df_k) >= Chisq_k),

    deviance = -2 log L, npar = m.dof. REML fits are refitted by maximum likelihood first, with
    lme4's message "refitting model(s) with ML (instead of REML)" as a warning."""
    if len(models) < 2:
        raise ValueError(f"anova compares two or more fitted models, got {len(models)}")
    for i, m in enumerate(models):
        check_fitted(f"model {i + 1}", m)
    kinds = {(type(m).__name__, str(getattr(m, "family_settings", {}).get("family"))) for m in models}
    if len(kinds) > 1:
        raise ValueError(f"anova compares models of one kind and family, got {sorted(kinds)}")
    if any(m.REML for m in models):
        warn("refitting model(s) with ML (instead of REML)", UserWarning)
        models = tuple(copy.copy(m).fit(REML=False) if m.REML else m for m in models)
    models = sorted(models, key=lambda m: m.dof)
    for small, large in zip(models, models[1:]):
        check_nested(small, large)
        if small.design.weights is not None and not np.array_equal(small.design.weights, large.design.weights):
            raise ValueError("the models are fitted with different weights")
    deviance = np.array([m.objective for m in models])
    npar = np.array([m.dof for m in models])
    chisq = np.concatenate([[np.nan], np.maximum(deviance[:-1] - deviance[1:], 0.0)])
    df = np.concatenate([[np.nan], np.diff(npar)])
    return pd.DataFrame(
        {
            "npar": npar,
            "AIC": [m.aic for m in models],
            "BIC": [m.bic for m in models],
            "logLik": -0.5 * deviance,
            "deviance": deviance,
            "Chisq": chisq,
            "Df": df,
            "Pr(>Chisq)": sps.chi2.sf(chisq, df),
        },
        index=pd.Index([m.formula for m in models], name="model"),
    )
