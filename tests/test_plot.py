"""jaxmm.plot: figures are drawn, and the point masses at the boundary (σ1 = 0, ρ = ±1) are visible."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt
import numpy as np
import pytest

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
