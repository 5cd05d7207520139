"""Estimated marginal means (R's emmeans) of a fitted mixed model, and contrasts among them.

The reference grid holds every level of each factor of the fixed effects and each numeric
covariate at its mean over the fitted rows (or at the values `at` gives). The marginal mean of a
combination of the `specs` factors (within a combination of the `by` factors) is the equally
weighted mean of the grid's predictions over the other factors:

    emmean_j = l_j' beta,   l_j = mean of the rows of X(grid) with that combination,
    SE_j = sqrt(l_j' V l_j),

V = Cov(beta-hat): for a linear mixed model Kenward-Roger's adjusted one by default (emmeans'
lmer.df = "kenward-roger", df by pbkrtest's Lb_ddf), or the unadjusted one with Satterthwaite's
df (ddf="satterthwaite"); for a GLMM, Wald with df = inf, on the link scale, or with
type="response" back-transformed: mu = g^-1(emmean), SE(mu) = |dmu/deta| SE, the interval's
ends transformed.

A contrast c of the means in a family (a `by` group) is the linear function sum_j c_j l_j, tested by
t = c'emmean / SE on its own df; p-values adjusted within each family: "tukey" (the studentized range
of the family's k means: P(Q_{k,df} > sqrt(2) |t|)), "holm", "bonferroni" or "none".
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

_ADJUSTMENTS = ("tukey", "holm", "bonferroni", "none")


def _grid_values(data: pd.DataFrame, variables: list[str], at: dict) -> dict[str, list]:
    """Per variable of the fixed effects, its values in the reference grid: a factor's levels
    (categorical, string or boolean columns), a numeric covariate's mean, unless `at` gives them."""
    unknown = [k for k in at if k not in variables]
    if unknown:
        raise ValueError(f"at names {unknown[0]!r}, which is no variable of the fixed effects: {', '.join(variables)}")
    values = {}
    for v in variables:
        column = data[v]
        if v in at:
            given = at[v]
            values[v] = list(given) if isinstance(given, (list, tuple, np.ndarray, pd.Series)) else [given]
        elif isinstance(column.dtype, pd.CategoricalDtype):
            values[v] = list(column.cat.categories)
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values[v] = [float(column.mean())]
        else:
            values[v] = sorted(column.unique())
    return values


def _as_names(value, what: str) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what} must name factors of the data, got {value!r}")
    return names


def _label(var: str, level) -> str:
    """A level as emmeans labels it in contrasts: prefixed by the factor's name if it looks like a number."""
    text = str(level)
    try:
        float(text)
    except ValueError:
        return text
    return f"{var}{text}"


class EMMeans:
    """Estimated marginal means of `m` (see the module docstring): `.table`, and `.contrast(...)`."""

    def __init__(self, m, specs, by=None, at=None, ddf: str | None = "kenward-roger", type: str = "link"):
        from formulaic import model_matrix

        from . import ddf as ddf_module
        from .formula import R_FUNCTIONS

        state = m._require_fit()
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        design = m.design
        if not design.estimable.all():
            dropped = [n for n, e in zip(m.coefnames, design.estimable) if not e]
            raise ValueError(f"emmeans needs a full-rank fixed-effects design; {dropped[0]!r} is aliased (m.estimable)")
        self.specs, self.by = _as_names(specs, "specs"), _as_names(by, "by")
        if not self.specs:
            raise ValueError("specs must name at least one factor")
        mm = model_matrix(design.formula.fixed, design.data, na_action="ignore", context=R_FUNCTIONS)
        variables = sorted(mm.model_spec.required_variables)
        values = _grid_values(design.data, variables, dict(at or {}))
        for name in self.specs + self.by:
            if name not in variables:
                raise ValueError(f"{name!r} is no variable of the fixed effects; they are {', '.join(variables)}")
        grid = pd.DataFrame(list(itertools.product(*values.values())), columns=list(values))
        for v in variables:
            if isinstance(design.data[v].dtype, pd.CategoricalDtype):
                grid[v] = pd.Categorical(grid[v], categories=design.data[v].cat.categories)
        x = np.asarray(mm.model_spec.get_model_matrix(grid, na_action="ignore"), dtype=np.float64)
        # one mean per combination of specs (the first varying fastest) within by (the last slowest)
        keys = [values[v] for v in reversed(self.by)] + [values[v] for v in reversed(self.specs)]
        names = self.specs + self.by
        order = list(reversed(self.by)) + list(reversed(self.specs))
        combos = [dict(zip(order, c)) for c in itertools.product(*keys)]
        rows = []
        for combo in combos:
            mask = np.all([grid[v].astype(object).to_numpy() == combo[v] for v in names], axis=0)
            rows.append(x[mask].mean(axis=0))
        self.linfct = np.array(rows)
        self.levels = pd.DataFrame([{v: c[v] for v in names} for c in combos], columns=names)
        self.beta = state.beta
        self.model = m
        self.type = type
        self.averaged = [v for v in variables if v not in names and len(values[v]) > 1]
        if m.has_dispersion:
            if type == "response":
                raise ValueError("type='response' back-transforms a GLMM's link; a linear mixed model has none")
            if ddf is None:
                raise ValueError("a linear mixed model's emmeans need ddf='kenward-roger' or 'satterthwaite'")
            self.inference = ddf_module.inference(m, ddf)
            self.vcov = self.inference.vcov
        else:
            self.inference = None
            self.vcov = m._beta_vcov()
        self.table = self._table()

    def _df(self, lmat: np.ndarray) -> np.ndarray:
        """Per row of lmat, the df of its t statistic (inf for a GLMM)."""
        if self.inference is None:
            return np.full(len(lmat), np.inf)
        return np.array([self.inference.contrast_1d(row)[2] for row in lmat])

    def _estimates(self, lmat: np.ndarray):
        est = lmat @ self.beta
        se = np.sqrt(np.einsum("ia,ab,ib->i", lmat, self.vcov, lmat))
        return est, se, self._df(lmat)

    def _inverse_link(self, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mu = g^-1(eta) and dmu/deta."""
        import jax
        import jax.numpy as jnp

        from ._compile import computing

        family = self.model.family
        with computing():
            eta = jnp.asarray(eta, dtype=jnp.float64)
            mu = family.inverse_link(eta)
            dmu = jax.vmap(jax.grad(family.inverse_link))(eta)
        return np.asarray(mu), np.asarray(dmu)

    def _table(self) -> pd.DataFrame:
        from scipy import stats as sps

        est, se, df = self._estimates(self.linfct)
        half = sps.t.ppf(0.975, df) * se
        lower, upper = est - half, est + half
        out = self.levels.copy()
        if self.type == "response":
            name = "rate" if self.model.family.name == "poisson" else "prob"
            mu, dmu = self._inverse_link(est)
            (lo, _), (hi, _) = self._inverse_link(lower), self._inverse_link(upper)
            return out.assign(**{name: mu, "SE": np.abs(dmu) * se, "df": df, "lower": lo, "upper": hi})
        return out.assign(emmean=est, SE=se, df=df, lower=lower, upper=upper)

    def _families(self):
        """(by values, indices of the means) per family of means (a by group)."""
        if not self.by:
            yield {}, np.arange(len(self.levels))
            return
        for key, idx in self.levels.groupby(self.by, sort=False, observed=True).indices.items():
            key = key if isinstance(key, tuple) else (key,)
            yield dict(zip(self.by, key)), np.asarray(idx)

    def _labels(self, idx: np.ndarray) -> list[str]:
        rows = self.levels.iloc[idx]
        return [" ".join(_label(v, r[v]) for v in self.specs) for _, r in rows.iterrows()]

    def contrast(self, method="pairwise", adjust: str | None = None) -> pd.DataFrame:
        """Contrasts of the means within each family: "pairwise" (i - j, i < j), "trt.vs.ctrl" (each
        level minus the first) or a matrix (one row per contrast, one column per mean of a family,
        a DataFrame's index naming them), p-values adjusted by `adjust` ("tukey", pairwise's default;
        "holm", the others'; "bonferroni"; "none"). Columns: contrast (and the by factors),
        estimate, SE, df, t, p; a GLMM's with type="response" and a logit or log link: the ratio
        (odds.ratio or ratio) and its SE, the test on the link scale."""
        from scipy import stats as sps

        adjust = ("tukey" if isinstance(method, str) and method == "pairwise" else "holm") if adjust is None else adjust
        if adjust not in _ADJUSTMENTS:
            raise ValueError(f"adjust must be one of {', '.join(_ADJUSTMENTS)}, got {adjust!r}")
        tables = []
        for by_values, idx in self._families():
            labels, k = self._labels(idx), len(idx)
            coefs, names = self._contrast_coefficients(method, k, labels)
            lmat = coefs @ self.linfct[idx]
            est, se, df = self._estimates(lmat)
            t = est / se
            p = 2.0 * sps.t.sf(np.abs(t), df)
            if adjust == "tukey":
                p = sps.studentized_range.sf(np.sqrt(2.0) * np.abs(t), k, df)
            elif adjust == "bonferroni":
                p = np.minimum(1.0, p * len(p))
            elif adjust == "holm":
                order = np.argsort(p)
                stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
                p = np.empty_like(p)
                p[order] = np.minimum(1.0, stepped)
            table = pd.DataFrame({"contrast": names, **{b: v for b, v in by_values.items()}})
            ratio = self.type == "response" and getattr(self.model, "family", None) is not None
            if ratio and self.model.family.link in ("logit", "log"):
                ratio_name = "odds.ratio" if self.model.family.link == "logit" else "ratio"
                table["contrast"] = [n.replace(" - ", " / ") for n in names]
                table = table.assign(**{ratio_name: np.exp(est), "SE": np.exp(est) * se})
            else:
                table = table.assign(estimate=est, SE=se)
            tables.append(table.assign(df=df, t=t, p=p))
        return pd.concat(tables, ignore_index=True)

    def _contrast_coefficients(self, method, k: int, labels: list[str]) -> tuple[np.ndarray, list[str]]:
        if isinstance(method, str):
            if method == "pairwise":
                pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
            elif method == "trt.vs.ctrl":
                pairs = [(j, 0) for j in range(1, k)]
            else:
                raise ValueError(f"method must be 'pairwise', 'trt.vs.ctrl' or a matrix, got {method!r}")
            coefs = np.zeros((len(pairs), k))
            for row, (i, j) in enumerate(pairs):
                coefs[row, i], coefs[row, j] = 1.0, -1.0
            return coefs, [f"{labels[i]} - {labels[j]}" for i, j in pairs]
        names = [str(i) for i in method.index] if isinstance(method, pd.DataFrame) else None
        coefs = np.atleast_2d(np.asarray(method, dtype=np.float64))
        if coefs.shape[1] != k:
            raise ValueError(f"a contrast matrix needs one column per mean of a family ({k}), got shape {coefs.shape}")
        return coefs, names or [f"c{i + 1}" for i in range(len(coefs))]

    def __repr__(self) -> str:
        from . import display

        return display.emmeans_table(self)
