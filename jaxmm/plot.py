"""Plots of bootstrap replicates (matplotlib, the `plot` extra: pip install 'jaxmm[plot]').

A variance component's bootstrap distribution is a mixture: a continuous part and a point mass
where the refit is singular (sigma_j exactly 0, rho exactly -1 or +1). A kernel density estimate
smears that point mass into a bump, so `density` draws it as a spike of its own, and `histogram`
puts the boundary on a bin edge and colours the replicates exactly at it.

`reference` draws the reference distribution of a parametric-bootstrap likelihood-ratio test
(`jaxmm.pblrt`) against the chi-square law of the classical test.

Every function returns the matplotlib Figure; pass `ax=` to draw into existing axes.
"""

from __future__ import annotations

import math

import numpy as np

_MASS_COLOR = "C3"
_INTERVAL_COLOR = "C1"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("jaxmm.plot needs matplotlib: pip install 'jaxmm[plot]'") from err
    return plt


def _figure_and_axes(ax):
    if ax is None:
        return _pyplot().subplots(figsize=(6, 4), layout="constrained")
    return ax.figure, ax


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
    n = len(intervals)
    if ax is None:
        nrows = math.ceil(n / ncols)
        fig, axes = _pyplot().subplots(
            nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False, layout="constrained"
        )
        axes = axes.ravel()
        for unused in axes[n:]:
            unused.set_visible(False)
    else:
        axes = np.ravel(ax)
        if len(axes) < n:
            raise ValueError(
                f"ax must hold at least {n} Axes (one per parameter: {', '.join(intervals['par'])}), got {len(axes)}"
            )
        fig = axes[0].figure
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
