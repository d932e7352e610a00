"""The shared plotting helpers of pipeline.evaluate.plots (line charts, figure grids)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.evaluate import plots


def test_line_chart_draws_one_labelled_line_per_series_in_palette_order():
    before = dict(matplotlib.rcParams)
    series = {"a": pd.Series([1.0, 2.0, 4.0], index=[1, 2, 3]),
              "b": pd.Series([0.5, 0.25], index=[2, 4]),
              "c": pd.Series([3.0], index=[1])}
    ax = plots.line_chart(series, xlabel="x", ylabel="y", title="t", legend_fontsize=8,
                          styles={"c": {"color": "k", "marker": "^"}}, marker="o", ms=3)
    assert isinstance(ax.figure, Figure) and tuple(ax.figure.get_size_inches()) == (8.0, 3.5)
    assert [ln.get_label() for ln in ax.lines] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [2, 4])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), [0.5, 0.25])
    # colours by position from the palette, unless a line's style sets one; plot_kw for every line,
    # the per-line style on top
    assert [ln.get_color() for ln in ax.lines] == [plots.PALETTE[0], plots.PALETTE[1], "k"]
    assert [ln.get_marker() for ln in ax.lines] == ["o", "o", "^"]
    assert all(ln.get_markersize() == 3 for ln in ax.lines)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x", "y", "t")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    assert legend.get_texts()[0].get_fontsize() == 8
    assert dict(matplotlib.rcParams) == before  # the style is applied per call, never globally


def test_line_chart_draws_into_a_given_axes():
    given = Figure().subplots()
    out = plots.line_chart({"only": pd.Series([1.0, 0.0], index=[0.5, 1.0])}, given, title="t")
    assert out is given and len(given.lines) == 1 and given.get_title() == "t"


def test_figure_grid_is_never_squeezed_and_axes_or_new_keeps_a_given_axes():
    fig, axes = plots.figure_grid(1, 1, (3.0, 2.0))
    assert axes.shape == (1, 1) and axes[0, 0].figure is fig
    assert tuple(fig.get_size_inches()) == (3.0, 2.0) and fig.get_layout_engine() is not None
    fig, axes = plots.figure_grid(2, 3, (6.0, 4.0), sharey=True)
    assert axes.shape == (2, 3) and axes[1, 2].get_shared_y_axes().joined(axes[0, 0], axes[1, 2])
    # made in the project style (figures.mplstyle turns the axes grid on)
    assert axes[0, 0].xaxis.get_major_ticks()[0].gridline.get_visible()
    assert plots.axes_or_new(axes[0, 1], (1.0, 1.0)) is axes[0, 1]
    own = plots.axes_or_new(None, (5.0, 4.0))
    assert tuple(own.figure.get_size_inches()) == (5.0, 4.0) and own.figure is not fig
