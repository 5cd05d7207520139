"""jaxmm.plot: figures are drawn, their artists hold the model's, profile's and bootstrap's numbers, and
the point masses at the boundary (σ1 = 0, ρ = ±1) are visible."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.stats import norm

import jaxmm
from jaxmm import plot

NSAMP = 300


@pytest.fixture(scope="module")
def dyestuff_samp():
    m = jaxmm.fit("yield ~ 1 + (1 | batch)", jaxmm.dataset("dyestuff"))
    return jaxmm.parametricbootstrap(42, NSAMP, m, progress=False)


@pytest.fixture(scope="module")
def sleep_samp():
    m = jaxmm.fit("reaction ~ 1 + days + (1 + days | subj)", jaxmm.dataset("sleepstudy"))
    return jaxmm.parametricbootstrap(42, NSAMP, m, progress=False)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _point_mass_bars(ax):
    return [p for p in ax.patches if p.get_gid() == "point mass"]


def test_histogram_first_bin_starts_at_zero_and_holds_the_exact_zeros(dyestuff_samp):
    at_zero = int((dyestuff_samp.tbl["σ1"] == 0).sum())
    assert at_zero > 0, "dyestuff's bootstrap has singular replicates"
    fig = plot.histogram(dyestuff_samp, "σ1")
    ax = fig.axes[0]
    bins = [p for p in ax.patches if p.get_gid() != "point mass"]
    assert bins[0].get_x() == 0.0  # the boundary is a bin edge, not smeared across a bin
    assert bins[0].get_height() >= at_zero
    (spike,) = _point_mass_bars(ax)
    assert spike.get_x() == 0.0 and spike.get_height() == at_zero
    assert sum(b.get_height() for b in bins) == NSAMP


def test_histogram_of_rho_marks_both_ends(sleep_samp):
    rho = sleep_samp.tbl["ρ1"].to_numpy()
    fig = plot.histogram(sleep_samp, "ρ1", bins=20)
    spikes = sorted(_point_mass_bars(fig.axes[0]), key=lambda p: p.get_x())
    expected = [n for n in (int(np.sum(rho == -1.0)), int(np.sum(rho == 1.0))) if n]
    assert expected, "sleepstudy's bootstrap has replicates with ρ = ±1"
    assert [p.get_height() for p in spikes] == expected
    assert spikes[-1].get_x() + spikes[-1].get_width() == pytest.approx(1.0)  # the last bin ends at ρ = 1


def test_density_draws_the_point_mass_as_a_spike(dyestuff_samp):
    share = float((dyestuff_samp.tbl["σ1"] == 0).mean())
    fig = plot.density(dyestuff_samp, "σ1")
    curve_ax, mass_ax = fig.axes
    x, y = curve_ax.lines[0].get_data()
    assert x.min() >= 0.0 and np.all(y >= 0)  # the curve stays inside σ1 ≥ 0
    # the curve holds the replicates off the boundary: its area is 1 - share (up to the cut tails)
    assert np.trapezoid(y, x) == pytest.approx(1 - share, abs=0.03)
    (spike,) = [c for c in mass_ax.collections if c.get_gid() == "point mass"]
    ((bottom, top),) = [seg[:, 1] for seg in spike.get_segments()]
    assert (bottom, top) == (0.0, pytest.approx(share))


def test_density_without_a_point_mass_has_one_axis(dyestuff_samp):
    fig = plot.density(dyestuff_samp, "β1")
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1


def test_grid_has_one_panel_per_parameter_with_its_shortest_interval(sleep_samp):
    fig = plot.grid(sleep_samp, level=0.9)
    intervals = sleep_samp.confint(0.9)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in panels] == list(intervals["par"])
    for ax, (_, lower, upper) in zip(panels, intervals.itertuples(index=False)):
        (band,) = [p for p in ax.patches if p.get_gid() == "interval"]
        xs = band.get_patch_transform().transform(band.get_path().vertices)[:, 0]  # Rectangle or Polygon
        assert (xs.min(), xs.max()) == pytest.approx((lower, upper))
    assert "subj: (Intercept), days" in panels[-1].get_title()


def test_plots_draw_into_given_axes(sleep_samp):
    fig, axes = plt.subplots(2, 4)
    assert plot.histogram(sleep_samp, "σ2", ax=axes[0, 0]) is fig
    assert plot.density(sleep_samp, "σ", ax=axes[0, 1]) is fig
    assert plot.grid(sleep_samp, ax=axes.ravel()[2:]) is fig
    with pytest.raises(ValueError, match="at least 6 Axes"):
        plot.grid(sleep_samp, ax=axes.ravel()[:3])


def test_unknown_column_names_the_columns(dyestuff_samp):
    with pytest.raises(ValueError, match=r"unknown column 'σ9' of samp.tbl; columns are: obj, β1, σ, σ1, θ1"):
        plot.histogram(dyestuff_samp, "σ9")


def test_missing_matplotlib_names_the_extra(dyestuff_samp, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'jaxmm\[plot\]'"):
        plot.histogram(dyestuff_samp, "σ1")


def _artist(ax, gid):
    (found,) = [a for a in [*ax.lines, *ax.collections, *ax.patches] if a.get_gid() == gid]
    return found


def _segments(collection):
    """(x0, x1, y) of each horizontal segment of a hlines collection."""
    return np.array([(s[0, 0], s[1, 0], s[0, 1]) for s in collection.get_segments()])


def test_caterpillar_draws_the_sorted_modes_with_their_intervals(sleep_samp):
    m = sleep_samp.model
    table = m.ranef(condvar=True)["subj"]
    half = norm.ppf(0.975) * np.sqrt(np.diagonal(table.attrs["condvar"], axis1=1, axis2=2))
    order = np.argsort(table["(Intercept)"].to_numpy())
    fig = plot.caterpillar(m)
    assert len(fig.axes) == 2
    for c, ax in enumerate(fig.axes):
        modes = table.iloc[:, c].to_numpy()[order]
        x, y = _artist(ax, "modes").get_data()
        assert np.array_equal(x, modes) and np.array_equal(y, np.arange(18))
        lower, upper, rows = _segments(_artist(ax, "intervals")).T
        assert lower == pytest.approx(modes - half[order, c]) and upper == pytest.approx(modes + half[order, c])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(table.index[order])


def test_qqcaterpillar_puts_each_columns_sorted_modes_at_the_normal_quantiles(sleep_samp):
    table = sleep_samp.model.ranef()["subj"]
    fig = plot.qqcaterpillar(sleep_samp.model, "subj", level=0.9)
    for c, ax in enumerate(fig.axes):
        x, y = _artist(ax, "modes").get_data()
        assert np.array_equal(x, np.sort(table.iloc[:, c].to_numpy()))
        assert y == pytest.approx(norm.ppf((np.arange(18) + 0.5) / 18))


def test_shrinkageplot_joins_per_subject_least_squares_to_the_mixed_model(sleep_samp):
    m = sleep_samp.model
    sleep = jaxmm.dataset("sleepstudy")
    table = m.ranef()["subj"]
    # per subject, reaction ~ 1 + days by least squares alone: slope, intercept
    separate = np.array(
        [np.polyfit(g["days"], g["reaction"], 1)[::-1] for _, g in sleep.groupby("subj", observed=True)]
    )
    fig = plot.shrinkageplot(m)
    (ax,) = fig.axes
    assert np.column_stack(_artist(ax, "least squares").get_data()) == pytest.approx(separate)
    assert np.column_stack(_artist(ax, "mixed").get_data()) == pytest.approx(m.beta.to_numpy() + table.to_numpy())
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("(Intercept)", "days")


def test_residual_plots_hold_the_fitted_values_and_residuals(sleep_samp):
    m = sleep_samp.model
    fitted, residuals = m.fitted(), m.residuals()
    x, y = _artist(plot.residplot(m).axes[0], "residuals").get_data()
    assert np.array_equal(x, fitted) and np.array_equal(y, residuals)
    x, y = _artist(plot.qqnorm(m).axes[0], "residuals").get_data()
    assert np.array_equal(y, np.sort(residuals)) and x == pytest.approx(norm.ppf((np.arange(180) + 0.5) / 180))
    ax = plot.residbygroup(m).axes[0]
    medians = [line.get_xdata()[0] for line in ax.lines if line.get_gid() == "median"]
    by_subject = [np.median(residuals[m.design.data["subj"].to_numpy() == s]) for s in m.ranef()["subj"].index]
    assert medians == pytest.approx(by_subject)


def test_coefplot_of_a_model_draws_wald_intervals_and_of_a_bootstrap_shortest_ones(sleep_samp):
    m = sleep_samp.model
    ax = plot.coefplot(m).axes[0]
    lower, upper, rows = _segments(_artist(ax, "intervals")).T
    z = norm.ppf(0.975)
    assert lower == pytest.approx(m.beta - z * m.stderror) and upper == pytest.approx(m.beta + z * m.stderror)
    assert np.array_equal(_artist(ax, "estimates").get_xdata(), m.beta.to_numpy())
    ax = plot.coefplot(sleep_samp, level=0.9, show_intercept=False).axes[0]
    (days,) = _segments(_artist(ax, "intervals"))
    shortest = sleep_samp.shortestcovint(0.9).query("type == 'β' and names == 'days'")
    assert tuple(days[:2]) == (shortest["lower"].item(), shortest["upper"].item())


def test_ridgeplot_draws_each_coefficients_replicates_with_its_shortest_interval(sleep_samp):
    ax = plot.ridgeplot(sleep_samp).axes[0]
    intervals = sleep_samp.shortestcovint().query("type == 'β'")
    for name, lower, upper in intervals[["names", "lower", "upper"]].itertuples(index=False):
        ((x0, x1, _),) = _segments(_artist(ax, f"interval {name}"))
        assert (x0, x1) == (lower, upper)
        assert _artist(ax, f"estimate {name}").get_xdata()[0] == sleep_samp.model.beta[name]
        values = sleep_samp.tbl["β1" if name == "(Intercept)" else "β2"]
        band = _artist(ax, f"density {name}").get_paths()[0].vertices[:, 0]
        assert (band.min(), band.max()) == pytest.approx(tuple(values.quantile([0.001, 0.999])))
    rows = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert rows == {"(Intercept)": 1, "days": 0}  # the first coefficient on top


@pytest.fixture(scope="module")
def sleep_profile(sleep_samp):
    return jaxmm.profile(sleep_samp.model)


def test_zetaplot_draws_each_parameters_profile(sleep_profile):
    fig = plot.zetaplot(sleep_profile)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in panels] == [
        "β (Intercept)",
        "β days",
        "σ subj (Intercept)",
        "σ subj days",
        "ρ subj (Intercept), days",
        "σ residual",
    ]
    x, y = _artist(panels[1], "zeta").get_data()
    days = sleep_profile.tbl.query("type == 'β' and names == 'days'").sort_values("value")
    assert np.array_equal(x, days["value"]) and np.array_equal(y, days["zeta"])
    levels = [line.get_ydata()[0] for line in panels[0].lines if line.get_gid() == "level"]
    assert levels == pytest.approx([-norm.ppf(0.975), norm.ppf(0.975)])


def test_model_plots_name_an_unknown_grouping_factor(sleep_samp):
    with pytest.raises(ValueError, match=r"unknown grouping factor 'item'; the model's are: subj"):
        plot.caterpillar(sleep_samp.model, "item")
