"""The project's plots: every evaluation and report figure, in one style (figures.mplstyle).

Axes-level functions take ``ax=None`` and return the Axes they drew on: with ``ax=None`` they make
their own object-API Figure (``ax.figure``, via :func:`axes_or_new`), otherwise they draw into the
caller's grid or notebook axes. The few multi-panel figures (:func:`training_curves`,
:func:`cumulative_hl_grid`) return their Figure; :func:`figure_grid` makes such a grid, also for
other modules' figures (the interpretation toolkit's). The style is applied by :func:`style`, a
context manager, around each plot, never globally: importing this module sets no backend and
touches no global pyplot state, so a notebook keeps its inline figures and its own style.

Save with :func:`pipeline.io.write_figure` (atomic).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.dates as mdates
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline.evaluate.conventions import DECILES, HL, IC_ROLLING_PERIODS, decile_label, weighting_label
from pipeline.evaluate.hl_analysis import cumulative_return

STYLE_FILE = Path(__file__).with_name("figures.mplstyle")
# The style file's colour cycle, for figures that pick colours by position.
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
MAIN_COLOUR = "#111111"  # the highlighted strategy (the CNN) among benchmarks

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def style() -> Iterator[None]:
    """Apply the project's figure style (figures.mplstyle) inside the ``with`` block only."""
    with matplotlib.style.context(STYLE_FILE):
        yield


def styled(fn: F) -> F:
    """Run a plot function inside :func:`style`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with style():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def figure_grid(n_rows: int, n_cols: int, figsize: tuple[float, float], **subplot_kw: Any
                ) -> tuple[Figure, np.ndarray]:
    """A new constrained-layout object-API Figure of ``figsize`` (inches) and its Axes, an array of
    shape (n_rows, n_cols) (never squeezed), created in the project style (the style's figure-level
    settings are read when the Figure is made). ``subplot_kw`` goes to ``Figure.subplots`` (e.g.
    ``sharey=True``)."""
    with style():
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.subplots(n_rows, n_cols, squeeze=False, **subplot_kw)


def axes_or_new(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or with ``ax=None`` the one Axes of a new :func:`figure_grid` Figure of
    ``figsize`` (inches): how every ``ax=None`` plot function gets its Axes."""
    return figure_grid(1, 1, figsize)[1][0, 0] if ax is None else ax


def _date_axis(ax: Axes) -> None:
    loc = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


# --------------------------------------------------------------------------------------------------
# Portfolios


@styled
def decile_bars(perf: pd.DataFrame, mktcap_is_proxy: bool, title: str = "",
                weights: tuple[str, ...] | list[str] = ("ew", "vw"), ax: Axes | None = None) -> Axes:
    """Annualised mean return per decile (Low..High, H-L), one bar group per weighting.

    Args:
        perf: index (weighting, decile str), column ann_ret (decimal). Bars are in percent.
    """
    ax = axes_or_new(ax, (8, 4))
    labels = [str(d) for d in DECILES] + [HL]
    x = np.arange(len(labels))
    width = 0.8 / max(len(weights), 1)
    for j, w in enumerate(weights):
        vals = [perf["ann_ret"].get((w, lab), np.nan) for lab in labels]
        ax.bar(x + (j - (len(weights) - 1) / 2) * width, np.asarray(vals, dtype=float) * 100, width,
               label=weighting_label(w, mktcap_is_proxy))
    ax.set_xticks(x, [decile_label(lab) if lab != HL else HL for lab in labels])
    ax.grid(axis="x", visible=False)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("annualised mean return (%)")
    ax.set_xlabel("decile of the signal (Low = lowest)")
    ax.set_title(title or "Decile portfolio returns")
    ax.legend()
    return ax


@styled
def cumulative_hl(hl: pd.DataFrame, ax: Axes | None = None, highlight: str | None = None,
                  dashed: pd.DataFrame | None = None, title: str = "",
                  ylabel: str = "cumulative H-L return (%, summed)") -> Axes:
    """Cumulative H-L return, one line per column: the running sum of per-period returns
    (conventions: summed, not compounded; :func:`hl_analysis.cumulative_return`), in percent.

    Args:
        hl: index date (datetime64), one column per line (its label), per-period H-L returns in
            decimals; NaN periods count 0.
        highlight: the column drawn thick and dark (the CNN among benchmarks), first; the others
            take the palette's colours after the first.
        dashed: optional frame like ``hl`` (e.g. net of costs), each column drawn dashed in the
            colour of the ``hl`` line it follows (columns are matched by position).
    """
    if hl.empty:
        raise ValueError("cumulative_hl: no H-L returns")
    ax = axes_or_new(ax, (8, 4))
    cols = list(hl.columns)
    if highlight in cols:
        cols = [highlight] + [c for c in cols if c != highlight]
    colours = {}
    for j, c in enumerate(cols):
        series = cumulative_return(hl[c].fillna(0.0)) * 100.0
        main = c == highlight
        colour = MAIN_COLOUR if main else PALETTE[(j + (1 if highlight in cols else 0)) % len(PALETTE)]
        ax.plot(series.index, series.to_numpy(), lw=2.0 if main else (1.0 if highlight else 1.5),
                color=colour, label=str(c), zorder=3 if main else 2)
        colours[j] = colour
    if dashed is not None:
        for j, c in enumerate(dashed.columns):
            series = cumulative_return(dashed[c].fillna(0.0)) * 100.0
            ax.plot(series.index, series.to_numpy(), lw=1.2, ls="--", color=colours.get(j),
                    label=str(c))
    ax.axhline(0.0, color="#888888", lw=0.6)
    _date_axis(ax)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left")
    return ax


def cumulative_hl_grid(hl: pd.DataFrame, highlight: str | None = None,
                       weight_labels: dict[str, str] | None = None) -> Figure:
    """One :func:`cumulative_hl` axis per weighting, side by side, one line per strategy.

    Args:
        hl: index date, MultiIndex columns (strategy, weighting) of per-period H-L returns in
            decimals (:func:`pipeline.report.artifacts.hl_returns`).
        weight_labels: weighting key -> axis title (e.g. {"vw": "dollar-volume-weighted (proxy)"}).
    Returns:
        the Figure (one axis per weighting, shared y axis).
    """
    if hl.empty:
        raise ValueError("cumulative_hl: no H-L returns")
    weightings = list(dict.fromkeys(hl.columns.get_level_values(1)))
    fig, axes = figure_grid(1, len(weightings), (4.0 * len(weightings), 3.0), sharey=True)
    axes = axes[0]
    for ax, w in zip(axes, weightings):
        cumulative_hl(hl.xs(w, axis=1, level=1), ax=ax, highlight=highlight,
                      title=(weight_labels or {}).get(w, w.upper()),
                      ylabel="cumulative H-L return (%)")
        if ax is not axes[-1]:
            ax.get_legend().remove()
    return fig


def gross_and_net_hl(returns: pd.DataFrame, mktcap_is_proxy: bool, title: str = "",
                     weights: tuple[str, ...] | list[str] = ("ew", "vw"),
                     net: pd.DataFrame | None = None, cost_bps: float | None = None,
                     ax: Axes | None = None) -> Axes:
    """The CNN's cumulative H-L return per weighting, gross (solid) and net of costs (dashed).

    Args:
        returns: long table date, weighting, decile, ret (from evaluate_signal).
        net: optional long table date, weighting, net (per-period net-of-cost H-L return, NaN where
            undefined); ``cost_bps`` labels it.
    """
    def wide(frame: pd.DataFrame, value: str, label: Callable[[str], str]) -> pd.DataFrame:
        cols = {}
        for w in weights:
            s = frame[frame["weighting"] == w]
            cols[label(w)] = s.set_index(pd.to_datetime(s["date"]))[value].sort_index()
        return pd.DataFrame(cols)

    hl = returns[returns["decile"] == HL]
    gross = wide(hl, "ret", lambda w: weighting_label(w, mktcap_is_proxy))
    costs = f"{cost_bps:g} bp" if cost_bps is not None else "costs"
    dashed = None if net is None else wide(
        net, "net", lambda w: f"{weighting_label(w, mktcap_is_proxy)}, net of {costs}")
    return cumulative_hl(gross, ax=ax, dashed=dashed,
                         title=title or "Long-short (High minus Low) portfolio")


# --------------------------------------------------------------------------------------------------
# Predictions and calibration


@styled
def p_up_histogram(p_up: np.ndarray, title: str = "", bins: int = 50, ax: Axes | None = None) -> Axes:
    """Histogram of predicted up-probabilities with the 0.5 decision threshold marked."""
    p = np.asarray(p_up, dtype=float)
    p = p[np.isfinite(p)]
    ax = axes_or_new(ax, (6, 4))
    ax.hist(p, bins=bins, color="0.35")
    ax.axvline(0.5, color="crimson", lw=1, ls="--", label="0.5")
    ax.set_xlabel("P(up)")
    ax.set_ylabel("stock-periods")
    ax.set_title(title or f"Out-of-sample P(up), n = {len(p):,}")
    ax.legend()
    return ax


@styled
def reliability_diagram(table: pd.DataFrame, ax: Axes | None = None, label: str = "CNN",
                        color: str | None = None) -> Axes:
    """Realised up share against mean P(up) per bin (a :func:`calibration.reliability_table`), with
    +-2 binomial standard errors and the diagonal of perfect calibration (drawn once per Axes, so
    several tables can share one). Returns the Axes."""
    ax = axes_or_new(ax, (5, 5))
    first = not ax.lines
    if len(table):
        lo = min(table["p_mean"].min(), (table["up_share"] - 2 * table["se"]).min())
        hi = max(table["p_mean"].max(), (table["up_share"] + 2 * table["se"]).max())
        pad = 0.02 + 0.05 * (hi - lo)
        lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    else:
        lo, hi = 0.0, 1.0
    if not first:  # widen to what is already drawn
        (l0, h0) = ax.get_xlim()
        lo, hi = min(lo, l0), max(hi, h0)
    else:
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.errorbar(table["p_mean"], table["up_share"], yerr=2 * table["se"], fmt="o-", ms=4, capsize=2,
                label=label, color=color)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("mean predicted P(up) in the bin")
    ax.set_ylabel("realised share up (±2 s.e.)")
    ax.set_title("Reliability (10 equal-count bins of P(up))")
    ax.legend(loc="upper left")
    return ax


@styled
def line_chart(series: Mapping[str, pd.Series], ax: Axes | None = None, *, xlabel: str = "",
               ylabel: str = "", title: str = "",
               styles: Mapping[str, Mapping[str, Any]] | None = None,
               legend_fontsize: float | None = None, figsize: tuple[float, float] = (8.0, 3.5),
               **plot_kw: Any) -> Axes:
    """One line per series, labelled by its key, in the order given; then the axis labels, the
    title and a legend. Returns the Axes.

    Args:
        series: label -> Series (index: the x values, numeric or datetime; values: y, in the units
            ``ylabel`` names). Line i takes ``PALETTE[i]`` (cycling) unless its style sets a colour.
        styles: label -> keyword arguments of ``Axes.plot`` for that line only (marker, ls, ms,
            color, ...); they override ``plot_kw``, which every line gets.
        legend_fontsize: None keeps the style's legend size.
        figsize: inches, for the Figure made when ``ax`` is None.
    """
    ax = axes_or_new(ax, figsize)
    for i, (label, s) in enumerate(series.items()):
        kw = {"color": PALETTE[i % len(PALETTE)], **plot_kw, **(styles or {}).get(label, {})}
        ax.plot(s.index, s.to_numpy(), label=label, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_fontsize)
    return ax


@styled
def share_up_by_year(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Share predicted up (P > 0.5), mean P(up) and realised share up per year (a
    :func:`calibration.by_year` table), in percent. Returns the Axes."""
    pred, mean, real = "predicted up (P > 0.5)", "mean P(up)", "realised up"
    ax = line_chart({pred: table["share_up_pred"] * 100, mean: table["mean_p_up"] * 100,
                     real: table["share_up_realised"] * 100}, ax,
                    styles={pred: {"marker": "o"}, mean: {"marker": "s", "ls": "--", "ms": 3},
                            real: {"marker": "^", "color": "k"}},
                    xlabel="year", ylabel="% of stock-periods",
                    title="Share up by year: predicted vs realised", legend_fontsize=8)
    ax.axhline(50, color="0.6", lw=0.8)
    return ax


@styled
def ic_bars(ic: pd.DataFrame, ax: Axes | None = None, window: int = IC_ROLLING_PERIODS,
            title: str = "") -> Axes:
    """Per-date information coefficient as bars with its ``window``-period rolling mean as a line
    (the line starts once ``window`` defined ICs are available). Returns the Axes.

    Args:
        ic: DataFrame with date and ic (Spearman, per rebalance date; from metrics.ic_by_date).
    """
    ax = axes_or_new(ax, (8, 3.5))
    d = ic.assign(date=pd.to_datetime(ic["date"])).sort_values("date")
    s = d.set_index("date")["ic"]
    # Bar width in days: most of the typical spacing between rebalance dates.
    step = float(np.median(np.diff(s.index.to_numpy()).astype("timedelta64[s]").astype(float))
                 / 86400.0) if len(s) > 1 else 1.0
    vals = s.to_numpy(dtype=float)
    ax.bar(s.index, np.nan_to_num(vals), width=0.8 * step,
           color=np.where(vals >= 0, "tab:blue", "tab:red"), alpha=0.6, label="IC per date")
    roll = s.dropna().rolling(window, min_periods=window).mean().dropna()
    ax.plot(roll.index, roll.to_numpy(), color="black", lw=1.5, label=f"{window}-period rolling mean")
    ax.axhline(0, color="black", lw=0.8)
    mean = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    if np.isfinite(mean):
        ax.axhline(mean, color="0.4", lw=0.8, ls="--", label=f"mean {mean:.3f}")
    ax.set_ylabel("Spearman IC")
    ax.set_title(title or "Information coefficient: Spearman(P(up), realised return) per date")
    ax.legend(fontsize=8)
    _date_axis(ax)
    return ax


# --------------------------------------------------------------------------------------------------
# Training and data (report figures drawn from artifacts that have no saved picture)


@styled
def training_curves(logs: list[pd.DataFrame], best_epochs: list[int | None] | None = None) -> Figure:
    """Loss and accuracy per epoch of each ensemble member (train solid, validation dashed).

    Args:
        logs: one frame per member (log.csv) with columns epoch, train_loss, val_loss, train_acc,
            val_acc; epochs as logged (the x axis shows them unchanged).
        best_epochs: per member the restored best epoch (summary.json), marked with a circle on the
            validation loss; None entries or a None list mark nothing.
    Returns:
        a Figure with two axes: [0] cross-entropy loss, [1] accuracy.
    """
    if not logs:
        raise ValueError("training_curves needs at least one member log")
    fig, axes = figure_grid(1, 2, (8.0, 3.0))
    axes = axes[0]
    for i, log in enumerate(logs):
        c = PALETTE[i % len(PALETTE)]
        for ax, what in zip(axes, ("loss", "acc")):
            ax.plot(log["epoch"], log[f"train_{what}"], color=c, lw=1.4, marker="o", ms=2.5,
                    label=f"member {i} train")
            ax.plot(log["epoch"], log[f"val_{what}"], color=c, lw=1.4, ls="--", marker="s",
                    ms=2.5, label=f"member {i} validation")
        b = best_epochs[i] if best_epochs and i < len(best_epochs) else None
        if b is not None:
            row = log[log["epoch"] == b]
            if len(row):
                axes[0].plot(row["epoch"], row["val_loss"], "o", ms=7, mfc="none", mec=c, mew=1.5)
    axes[0].set_title("Cross-entropy loss")
    axes[1].set_title("Accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(loc="best", ncol=1 if len(logs) <= 3 else 2)
    return fig


@styled
def universe_plot(universe: pd.DataFrame, images_per_year: dict[str, pd.Series] | None = None,
                  ax: Axes | None = None) -> Axes:
    """Stocks in the panel per year (bars) and images per year of each image set (lines, right axis).

    Args:
        universe: index year (int), column n_stocks (int).
        images_per_year: image-set name -> Series (index year, values n_images).
    """
    ax = axes_or_new(ax, (8.0, 2.8))
    years = universe.index.to_numpy()
    ax.bar(years, universe["n_stocks"].to_numpy(), color="#c6d4e1", edgecolor="#6f8fae",
           lw=0.5, label="stocks in panel")
    ax.set_ylabel("stocks with a record")
    ax.set_xlabel("year")
    ax.grid(axis="x", visible=False)
    handles, labels = ax.get_legend_handles_labels()
    if images_per_year:
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        for j, (name, s) in enumerate(images_per_year.items()):
            ax2.plot(s.index.to_numpy(), s.to_numpy(), color=PALETTE[(j + 1) % len(PALETTE)],
                     marker="o", ms=3, lw=1.4, label=f"{name} images")
        ax2.set_ylabel("images")
        ax2.set_ylim(bottom=0)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper left")
    if len(years):
        step = max(1, int(np.ceil(len(years) / 14)))
        ax.set_xticks(years[::step])
    return ax
