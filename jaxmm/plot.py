"""Plots of fitted models, profiles and bootstrap replicates (matplotlib, the `plot` extra:
pip install 'jaxmm[plot]'), with MixedModelsMakie's names where it has the plot.

A fitted model: `caterpillar` and `qqcaterpillar` (conditional modes with their intervals),
`shrinkageplot` (per-level coefficients against per-level least squares), `coefplot` (fixed
effects with Wald intervals), and the residual diagnostics `residplot` (residuals against fitted
values), `qqnorm` (normal QQ plot of the residuals) and `residbygroup` (residuals per level).
A profile (`jaxmm.profile(m)`): `zetaplot`.

A bootstrap: `ridgeplot` and `coefplot` (fixed effects with their shortest intervals), and
`histogram`, `density` and `grid` (any parameter). A variance component's bootstrap distribution
is a mixture: a continuous part and a point mass where the refit is singular (sigma_j exactly 0,
rho exactly -1 or +1). A kernel density estimate smears that point mass into a bump, so `density`
draws it as a spike of its own, and `histogram` puts the boundary on a bin edge and colours the
replicates exactly at it.

`reference` draws the reference distribution of a parametric-bootstrap likelihood-ratio test
(`jaxmm.pblrt`) against the chi-square law of the classical test.

Every function returns the matplotlib Figure; pass `ax=` to draw into existing axes (a sequence of
Axes, one per panel, for the plots with several panels).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_MASS_COLOR = "C3"
_INTERVAL_COLOR = "C1"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("jaxmm.plot needs matplotlib: pip install 'jaxmm[plot]'") from err
    return plt


def _figure_and_axes(ax, size=(6, 4)):
    if ax is None:
        return _pyplot().subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def _panels(names: list[str], what: str, ncols: int, ax, size=(4, 3)):
    """The Figure and one Axes per name: a new grid of ncols columns, or the given sequence of Axes."""
    n = len(names)
    if ax is None:
        ncols = min(ncols, n)
        nrows = math.ceil(n / ncols)
        fig, axes = _pyplot().subplots(
            nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, layout="constrained"
        )
        axes = axes.ravel()
        for unused in axes[n:]:
            unused.set_visible(False)
        return fig, axes[:n]
    axes = np.ravel(ax)
    if len(axes) < n:
        raise ValueError(f"ax must hold at least {n} Axes (one per {what}: {', '.join(names)}), got {len(axes)}")
    return axes[0].figure, axes[:n]


def _column(tbl, column: str) -> np.ndarray:
    """The non-missing values of one column of samp.tbl (rho is NaN where a sigma is 0)."""
    if column not in tbl.columns:
        raise ValueError(f"unknown column {column!r} of samp.tbl; columns are: {', '.join(tbl.columns)}")
    values = tbl[column].to_numpy(dtype=np.float64)
    return values[~np.isnan(values)]


def _support(samp, tbl, column: str) -> tuple[float, float]:
    """The closed range a parameter lives in; a singular fit puts it exactly on a finite end."""
    if column.startswith("ρ"):
        return -1.0, 1.0
    if column.startswith("σ"):
        return 0.0, math.inf
    if column.startswith("θ"):
        thetas = [c for c in tbl.columns if c.startswith("θ")]
        return float(samp.lowerbd[thetas.index(column)]), math.inf
    return -math.inf, math.inf


def _point_masses(values: np.ndarray, support: tuple[float, float]) -> list[tuple[float, int]]:
    """(boundary, number of replicates exactly at it) for each finite end holding some."""
    ends = [b for b in support if math.isfinite(b)]
    return [(b, n) for b in ends if (n := int(np.sum(values == b)))]


def _descriptions(samp, tbl) -> dict[str, str]:
    """What each column of samp.tbl estimates: β by coefficient name, σ and ρ by group and columns."""
    vc = samp.model.varcorr()
    sds = vc[vc["var2"].isna() & (vc["grp"] != "Residual")]
    rhos = vc[vc["var2"].notna()]
    described = {
        "β": list(samp.model.coefnames),
        "σ": [f"{g}: {c}" for g, c in zip(sds["grp"], sds["var1"])],
        "ρ": [f"{g}: {a}, {b}" for g, a, b in zip(rhos["grp"], rhos["var1"], rhos["var2"])],
    }
    out = {"σ": "residual"}
    for symbol, descriptions in described.items():
        columns = [c for c in tbl.columns if c.startswith(symbol) and c != "σ"]
        out.update(zip(columns, descriptions))
    return out


def _draw_histogram(ax, values: np.ndarray, column: str, support: tuple[float, float], bins) -> None:
    # Bin edges run from the smallest to the largest value, so a boundary that holds replicates is
    # an edge and its bin holds the boundary's point mass; that mass is drawn over it in colour.
    counts, edges = np.histogram(values, bins)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0")
    for boundary, n in _point_masses(values, support):
        i = min(int(np.searchsorted(edges, boundary, side="right")) - 1, len(edges) - 2)
        ax.bar(
            edges[i],
            n,
            width=edges[i + 1] - edges[i],
            align="edge",
            color=_MASS_COLOR,
            gid="point mass",
            label=f"{column} = {boundary:g} exactly: {n} of {len(values)}",
        )
    ax.set_xlabel(column)
    ax.set_ylabel("replicates")


def histogram(samp, column: str, *, bins=40, ax=None):
    """Histogram of one column of `samp.tbl` (e.g. "σ1"); replicates exactly on the boundary
    (σ_j = 0, ρ = ±1) are coloured in the bin that starts (or ends) at it. Returns the Figure."""
    tbl = samp.tbl
    values = _column(tbl, column)
    support = _support(samp, tbl, column)
    fig, ax = _figure_and_axes(ax)
    _draw_histogram(ax, values, column, support, bins)
    if _point_masses(values, support):
        ax.legend()
    return fig


def density(samp, column: str, *, ax=None):
    """Kernel density of one column of `samp.tbl`, with each point mass at a boundary drawn as a spike.

    The curve is the density of the replicates off the boundary, scaled by their share, so that
    curve and spikes together hold all replicates; the curve is cut at the ends of the parameter's
    range (σ ≥ 0, -1 ≤ ρ ≤ 1). Returns the Figure."""
    from scipy.stats import gaussian_kde  # imported when drawn: SciPy's stats take seconds to import

    tbl = samp.tbl
    values = _column(tbl, column)
    lo, hi = _support(samp, tbl, column)
    fig, ax = _figure_and_axes(ax)
    inside = values[(values > lo) & (values < hi)]
    if len(np.unique(inside)) > 1:
        kde = gaussian_kde(inside)
        pad = 3 * math.sqrt(kde.covariance[0, 0])
        x = np.linspace(max(lo, inside.min() - pad), min(hi, inside.max() + pad), 512)
        ax.plot(x, kde(x) * len(inside) / len(values), color="C0")
        ax.fill_between(x, kde(x) * len(inside) / len(values), color="C0", alpha=0.2)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(column)
    ax.set_ylabel("density")
    masses = _point_masses(values, (lo, hi))
    if masses:
        # A point mass has no density: its share of the replicates is a spike on an axis of its own.
        shares = [n / len(values) for _, n in masses]
        mass_ax = ax.twinx()
        mass_ax.vlines([b for b, _ in masses], 0, shares, color=_MASS_COLOR, linewidth=4, gid="point mass")
        mass_ax.set_ylim(0, 1.25 * max(shares))
        mass_ax.yaxis.set_major_formatter(lambda share, _: f"{share:.0%}" if max(shares) >= 0.05 else f"{share:.1%}")
        mass_ax.set_ylabel(
            f"share of replicates exactly at {' or '.join(f'{b:g}' for b, _ in masses)}", color=_MASS_COLOR
        )
        for (boundary, _), share in zip(masses, shares):
            inward = 1 if boundary == lo else -1  # the label reads from the spike into the plot
            mass_ax.annotate(
                f"{column} = {boundary:g}: {share:.1%}",
                (boundary, share),
                xytext=(6 * inward, 4),
                textcoords="offset points",
                ha="left" if inward > 0 else "right",
                color=_MASS_COLOR,
            )
    return fig


def grid(samp, level: float = 0.95, *, bins=40, ncols: int = 3, ax=None):
    """Histograms of all parameters (β, σ, σ_j, ρ_j), each with its shortest `level` coverage
    interval shaded. `ax`: a sequence (or array) of at least as many Axes as parameters. Returns the Figure."""
    intervals = samp.confint(level)
    tbl = samp.tbl
    described = _descriptions(samp, tbl)
    fig, axes = _panels(list(intervals["par"]), "parameter", ncols, ax)
    for a, (par, lower, upper) in zip(axes, intervals.itertuples(index=False)):
        _draw_histogram(a, _column(tbl, par), par, _support(samp, tbl, par), bins)
        a.axvspan(lower, upper, color=_INTERVAL_COLOR, alpha=0.3, zorder=0, gid="interval")
        a.set_title(f"{par} ({described[par]})\n[{lower:.4g}, {upper:.4g}]", fontsize="medium")
    fig.suptitle(
        f"{samp.nsamp} bootstrap replicates: shortest {level:.0%} intervals shaded, boundary replicates in red"
    )
    return fig


def reference(result, *, bins=40, ax=None):
    """Histogram of a `jaxmm.pblrt` result's reference distribution (the LRT* of its replicates),
    with the chi-square(df) density the classical test uses (scaled to the replicate counts) and
    the observed LRT as a vertical line; replicates with LRT* exactly 0 (the small model fits as
    well as the large one) are coloured. Returns the Figure."""
    from scipy.stats import chi2

    values = np.asarray(result.reference, dtype=np.float64)
    fig, ax = _figure_and_axes(ax)
    _draw_histogram(ax, values, "LRT*", (0.0, math.inf), bins)
    width = (values.max() - values.min()) / bins if np.ptp(values) > 0 else 1.0
    x = np.linspace(max(values.min(), 1e-3), max(values.max(), result.lrt), 512)
    ax.plot(x, chi2.pdf(x, result.df) * len(values) * width, color="C2", gid="chi-square", label=f"χ²({result.df})")
    ax.axvline(result.lrt, color=_INTERVAL_COLOR, gid="observed", label=f"observed LRT = {result.lrt:.4g}")
    ax.set_ylim(0, 1.1 * np.histogram(values, bins)[0].max())
    ax.set_title(
        f"{result.nused} replicates: bootstrap p = {result.pvalue_bootstrap:.4g}, χ² p = {result.pvalue_chisq:.4g}",
        fontsize="medium",
    )
    ax.legend()
    return fig


# ---- fitted models: conditional modes, shrinkage, residuals ---------------------------------------


def _ranef_table(m, group: str | None, condvar: bool = False):
    """The conditional modes of one grouping factor (default the first): m.ranef()[group]."""
    tables = m.ranef(condvar=condvar)
    group = next(iter(tables)) if group is None else group
    if group not in tables:
        raise ValueError(f"unknown grouping factor {group!r}; the model's are: {', '.join(tables)}")
    return group, tables[group]


def _normal_quantiles(n: int) -> np.ndarray:
    """Phi^-1((i - 1/2) / n), i = 1..n: where n sorted draws of N(0, 1) are expected."""
    return np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])


def _modes_and_halfwidths(m, group, level: float):
    """(group, table of modes b_jc, half-widths z sqrt(Var(b_jc | y))), z = Phi^-1((1 + level) / 2)."""
    group, table = _ranef_table(m, group, condvar=True)
    z = NormalDist().inv_cdf((1 + level) / 2)
    sd = np.sqrt(np.diagonal(table.attrs["condvar"], axis1=1, axis2=2))
    return group, table, z * sd


def caterpillar(m, group: str | None = None, *, level: float = 0.95, orderby: int = 0, ax=None):
    """The conditional modes b_j of each level j of a grouping factor (default the first), one panel per
    random-effects column, with the intervals b_jc ± z sqrt(Var(b_jc | y)), z = Phi^-1((1 + level) / 2)
    (the conditional variances of `m.ranef(condvar=True)`); the levels sorted by the modes of column
    `orderby` (MixedModelsMakie's caterpillar). Returns the Figure."""
    group, table, half = _modes_and_halfwidths(m, group, level)
    order = np.argsort(table.iloc[:, orderby].to_numpy(), kind="stable")
    fig, axes = _panels(list(table.columns), "column", len(table.columns), ax, size=(3.5, 0.5 + 0.2 * len(table)))
    rows = np.arange(len(table))
    for c, (a, column) in enumerate(zip(axes, table.columns)):
        modes = table[column].to_numpy()[order]
        a.hlines(rows, modes - half[order, c], modes + half[order, c], color="C0", gid="intervals")
        a.plot(modes, rows, "o", color="C0", markersize=4, gid="modes")
        a.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
        a.set_yticks(rows, [str(v) for v in table.index[order]] if a is axes[0] else [])
        a.set_xlabel(column)
    axes[0].set_ylabel(group)
    fig.suptitle(f"conditional modes of {group} with {level:.0%} intervals", fontsize="medium")
    return fig


def qqcaterpillar(m, group: str | None = None, *, level: float = 0.95, ax=None):
    """Normal QQ plot of the conditional modes of a grouping factor (default the first), one panel per
    random-effects column: the n modes of a column, sorted, against the standard normal quantiles
    Phi^-1((i - 1/2) / n), each with its interval b_jc ± z sqrt(Var(b_jc | y)) as in `caterpillar`
    (MixedModelsMakie's qqcaterpillar). Returns the Figure."""
    group, table, half = _modes_and_halfwidths(m, group, level)
    quantiles = _normal_quantiles(len(table))
    fig, axes = _panels(list(table.columns), "column", len(table.columns), ax, size=(3.5, 3.5))
    for c, (a, column) in enumerate(zip(axes, table.columns)):
        order = np.argsort(table[column].to_numpy(), kind="stable")
        modes = table[column].to_numpy()[order]
        a.hlines(quantiles, modes - half[order, c], modes + half[order, c], color="C0", gid="intervals")
        a.plot(modes, quantiles, "o", color="C0", markersize=4, gid="modes")
        a.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
        a.set_xlabel(column)
    axes[0].set_ylabel("standard normal quantile")
    fig.suptitle(f"conditional modes of {group} against normal quantiles, {level:.0%} intervals", fontsize="medium")
    return fig


def _linear_model(m, what: str):
    from .lmm import LinearMixedModel

    if not isinstance(m, LinearMixedModel):
        raise ValueError(f"{what} is drawn for linear mixed models; this is a {type(m).__name__}")


def _coefficients(m, group: str | None):
    """Per level j of the grouping factor, for the term's columns c: the mixed model's coefficient
    beta_c + b_jc and the least-squares one beta_c + b~_jc, where b~_j minimises sum_i w_i (r_i - z_i b)²
    over level j's rows i, r = y - o - X beta - (the other terms' Z b); beta_c = 0 where column c
    is not a fixed effect."""
    from .predict import new_matrices

    group, table = _ranef_table(m, group)
    design, tables = m.design, m.ranef()
    mats = new_matrices(design, design.data, allow_new_levels=False)
    r = design.y - mats.offset - mats.x @ m.beta.to_numpy()[design.estimable]
    for other, refs, z in zip(tables, mats.refs, mats.z):
        if other != group:
            r = r - np.sum(z * tables[other].to_numpy()[refs], axis=1)
    t = list(tables).index(group)
    refs, z = mats.refs[t], mats.z[t]
    w = np.sqrt(design.weights) if design.weights is not None else np.ones(len(r))
    least_squares = np.array(
        [np.linalg.lstsq(z[refs == j] * w[refs == j, None], r[refs == j] * w[refs == j])[0] for j in range(len(table))]
    )
    beta = np.array([m.beta.get(c, 0.0) for c in table.columns])
    return group, table, beta + table.to_numpy(), beta + least_squares


def shrinkageplot(m, group: str | None = None, *, ax=None):
    """Shrinkage of the per-level coefficients of a grouping factor (default the first): for each level,
    the least-squares estimate from that level's rows alone (blue; the other effects held at the fit) and
    the mixed model's beta + b_j (red), joined by a line (MixedModelsMakie's shrinkageplot). One panel
    per pair of the term's columns (coefficient against coefficient), or for a single column the
    coefficient per level. A linear mixed model's. Returns the Figure."""
    _linear_model(m, "shrinkageplot")
    group, table, mixed, least = _coefficients(m, group)
    columns = list(table.columns)
    k = len(columns)
    pairs = [(i, j) for j in range(k) for i in range(j)] or [(0, None)]
    names = [columns[0] if j is None else f"{columns[j]} vs {columns[i]}" for i, j in pairs]
    fig, axes = _panels(names, "pair of columns", min(len(pairs), 3), ax, size=(4, 4))
    rows = np.arange(len(table))
    for a, (i, j) in zip(axes, pairs):
        ys_mixed, ys_least = (rows, rows) if j is None else (mixed[:, j], least[:, j])
        a.plot(
            np.array([least[:, i], mixed[:, i]]), np.array([ys_least, ys_mixed]), color="0.6", linewidth=0.8, zorder=0
        )
        a.plot(least[:, i], ys_least, "o", color="C0", markersize=4, gid="least squares", label="per level")
        a.plot(mixed[:, i], ys_mixed, "o", color="C3", markersize=4, gid="mixed", label="mixed model")
        a.set_xlabel(columns[i])
        if j is None:
            a.set_yticks(rows, [str(v) for v in table.index])
            a.set_ylabel(group)
        else:
            a.set_ylabel(columns[j])
    axes[0].legend(fontsize="small")
    fig.suptitle(f"shrinkage of the coefficients per {group}", fontsize="medium")
    return fig


def _residuals(m):
    _linear_model(m, "a residual plot")
    return m.fitted(), m.residuals()


def residplot(m, *, ax=None):
    """Residuals y - (X beta + Z b) against the fitted values X beta + Z b, with the zero line. A linear
    mixed model's. Returns the Figure."""
    fitted, residuals = _residuals(m)
    fig, ax = _figure_and_axes(ax)
    ax.plot(fitted, residuals, "o", color="C0", markersize=3, alpha=0.7, gid="residuals")
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set_xlabel("fitted")
    ax.set_ylabel("residual")
    return fig


def qqnorm(m, *, ax=None):
    """Normal QQ plot of the residuals: the n residuals, sorted, against Phi^-1((i - 1/2) / n), with the
    line mean + sd x of the normal law with the residuals' mean and standard deviation. A linear mixed
    model's. Returns the Figure."""
    _, residuals = _residuals(m)
    quantiles = _normal_quantiles(len(residuals))
    fig, ax = _figure_and_axes(ax)
    ax.plot(quantiles, np.sort(residuals), "o", color="C0", markersize=3, gid="residuals")
    ends = quantiles[[0, -1]]
    ax.plot(ends, residuals.mean() + residuals.std() * ends, color="C3", gid="normal")
    ax.set_xlabel("standard normal quantile")
    ax.set_ylabel("residual")
    return fig


def residbygroup(m, group: str | None = None, *, ax=None):
    """Box plots of the residuals y - (X beta + Z b) per level of a grouping factor (default the first),
    in the model's order of levels. A linear mixed model's. Returns the Figure."""
    _, residuals = _residuals(m)
    group, table = _ranef_table(m, group)
    refs = m.design.matrices.refs[list(m.ranef()).index(group)]
    by_level = [residuals[np.asarray(refs) == j] for j in range(len(table))]
    fig, ax = _figure_and_axes(ax)
    boxes = ax.boxplot(by_level, tick_labels=[str(v) for v in table.index], orientation="horizontal")
    for median in boxes["medians"]:
        median.set_gid("median")
    ax.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
    ax.set_xlabel("residual")
    ax.set_ylabel(group)
    return fig


# ---- fixed effects: bootstrap and Wald intervals ---------------------------------------------------


def _fixed_effects(x, level: float, show_intercept: bool):
    """(model, table of names, lower, upper): a bootstrap's shortest intervals of β, or a model's Wald ones."""
    from .results import MixedModelBootstrap

    m = x.model if isinstance(x, MixedModelBootstrap) else x
    intervals = x.shortestcovint(level) if isinstance(x, MixedModelBootstrap) else m.confint(level, "wald")
    intervals = intervals[intervals["type"] == "β"]
    if not show_intercept:
        intervals = intervals[intervals["names"] != "(Intercept)"]
    return m, intervals.reset_index(drop=True)


def coefplot(x, *, level: float = 0.95, show_intercept: bool = True, ax=None):
    """The fixed-effects estimates with their intervals: for a bootstrap, the shortest intervals holding
    `level` of the replicates; for a fitted model, the Wald intervals beta ± z se, z = Phi^-1((1 + level) / 2)
    (MixedModelsMakie's coefplot). Returns the Figure."""
    m, intervals = _fixed_effects(x, level, show_intercept)
    fig, ax = _figure_and_axes(ax, (6, 1 + 0.35 * len(intervals)))
    rows = np.arange(len(intervals))[::-1]  # the first coefficient on top
    ax.hlines(rows, intervals["lower"], intervals["upper"], color="C0", linewidth=2, gid="intervals")
    ax.plot(m.beta[intervals["names"]].to_numpy(), rows, "o", color="C0", gid="estimates")
    ax.axvline(0.0, color="0.6", linewidth=0.8, zorder=0)
    ax.set_yticks(rows, list(intervals["names"]))
    ax.set_xlabel(f"estimate, {level:.0%} {'Wald' if m is x else 'shortest bootstrap'} interval")
    return fig


def ridgeplot(samp, *, level: float = 0.95, show_intercept: bool = True, ax=None):
    """The bootstrap distributions of the fixed effects, one ridge per coefficient: a kernel density of its
    replicates (each scaled to the same height) between their 0.1 % and 99.9 % quantiles (a few extreme
    replicates, such as a GLMM's nearly separated fits, would stretch the axis), the shortest interval
    holding `level` of them as a bar under it and the model's estimate as a point (MixedModelsMakie's
    ridgeplot). Returns the Figure."""
    from scipy.stats import gaussian_kde

    m, intervals = _fixed_effects(samp, level, show_intercept)
    beta = samp.beta
    fig, ax = _figure_and_axes(ax, (6, 1.5 + 0.6 * len(intervals)))
    for row, (name, lower, upper) in zip(
        np.arange(len(intervals))[::-1], intervals[["names", "lower", "upper"]].itertuples(index=False)
    ):
        values = beta.loc[beta["coefname"] == name, "β"].to_numpy(dtype=np.float64)
        if np.ptp(values) > 0:
            kde = gaussian_kde(values)
            x = np.linspace(*np.quantile(values, [0.001, 0.999]), 256)
            height = kde(x) / kde(x).max() * 0.85
            ax.fill_between(x, row, row + height, color="C0", alpha=0.3, gid=f"density {name}")
        ax.hlines(row, lower, upper, color="C0", linewidth=3, gid=f"interval {name}")
        ax.plot(m.beta[name], row, "o", color="C3", gid=f"estimate {name}")
    ax.set_yticks(np.arange(len(intervals))[::-1], list(intervals["names"]))
    ax.set_xlabel(f"{samp.nsamp} replicates, shortest {level:.0%} intervals")
    return fig


# ---- profiles -------------------------------------------------------------------------------------


def zetaplot(pr, *, level: float = 0.95, ncols: int = 3, ax=None):
    """The likelihood profile of a `jaxmm.profile(m)`: zeta against each parameter's value, one panel
    per parameter, zeta = sign(p - p-hat) sqrt(deviance(p) - deviance(p-hat)) with the other parameters
    re-optimised; the dashed lines ±z, z = Phi^-1((1 + level) / 2), cross the curve at the ends of the
    profile interval (MixedModelsMakie's zetaplot). Returns the Figure."""
    parts = list(pr.tbl.groupby(["type", "group", "names"], dropna=False, sort=False))
    names = [" ".join(p for p in label if isinstance(p, str)) for label, _ in parts]  # NaN: no group or names
    fig, axes = _panels(names, "parameter", ncols, ax)
    z = NormalDist().inv_cdf((1 + level) / 2)
    for a, name, (_, part) in zip(axes, names, parts):
        part = part.sort_values("value")
        a.plot(part["value"], part["zeta"], "-o", color="C0", markersize=2, gid="zeta")
        a.axhline(0.0, color="0.6", linewidth=0.8)
        for bound in (-z, z):
            a.axhline(bound, color=_INTERVAL_COLOR, linestyle="--", linewidth=0.8, gid="level")
        a.set_xlabel(name)
        a.set_ylabel("ζ")
    fig.suptitle(f"profile zeta; dashed: ±{z:.3g} ({level:.0%} intervals)", fontsize="medium")
    return fig
