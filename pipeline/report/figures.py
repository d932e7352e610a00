"""Figures the report draws from artifact data; each function returns a matplotlib Figure.

The evaluation and Grad-CAM stages save their own PNGs, which the report embeds as they are; the
figures here plot artifacts that have no saved picture (per-epoch logs, the panel's universe, the
H-L series of portfolios.parquet). Callers save or embed the Figure and close it.
"""

from __future__ import annotations

import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# One restrained palette for every report figure (colour-blind-safe Tableau order).
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.6,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


def training_curves(logs: list[pd.DataFrame], best_epochs: list[int | None] | None = None) -> Figure:
    """Loss and accuracy per epoch of each ensemble member (train solid, validation dashed).

    Args:
        logs: one frame per member (log.csv) with columns epoch, train_loss, val_loss, train_acc,
            val_acc; epochs as logged (the x axis shows them unchanged).
        best_epochs: per member the restored best epoch (summary.json), marked with a dot on the
            validation loss; None entries or a None list mark nothing.
    Returns:
        a Figure with two axes: [0] cross-entropy loss, [1] accuracy.
    """
    if not logs:
        raise ValueError("training_curves needs at least one member log")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8.0, 3.0), layout="constrained")
        axes = fig.subplots(1, 2)
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
        axes[1].legend(fontsize=7, loc="best", ncol=1 if len(logs) <= 3 else 2)
    return fig


def cumulative_hl(hl: pd.DataFrame, highlight: str | None = None,
                  weight_labels: dict[str, str] | None = None) -> Figure:
    """Cumulative sum of per-period H-L returns, one axis per weighting, one line per strategy.

    Args:
        hl: index date (datetime64, ascending), MultiIndex columns (strategy, weighting) of per-period
            H-L returns in decimals (:func:`pipeline.report.artifacts.hl_returns`); NaN periods count 0.
        highlight: the strategy drawn thick and dark (the CNN); others thin.
        weight_labels: weighting key -> axis title (e.g. {"vw": "dollar-volume-weighted (proxy)"}).
    Returns:
        a Figure with one axis per weighting, y = cumulative sum of returns (not compounded: H-L is
        a zero-cost portfolio), in percent.
    """
    if hl.empty:
        raise ValueError("cumulative_hl: no H-L returns")
    weightings = list(dict.fromkeys(hl.columns.get_level_values(1)))
    strategies = list(dict.fromkeys(hl.columns.get_level_values(0)))
    if highlight in strategies:  # the CNN first, in the darkest colour
        strategies = [highlight] + [s for s in strategies if s != highlight]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.0 * len(weightings), 3.0), layout="constrained")
        axes = fig.subplots(1, len(weightings), sharey=True, squeeze=False)
        for ax, w in zip(axes[0], weightings):
            for j, s in enumerate(strategies):
                if (s, w) not in hl.columns:
                    continue
                series = hl[(s, w)].fillna(0.0).cumsum() * 100.0
                main = s == highlight
                ax.plot(series.index, series.to_numpy(), lw=2.0 if main else 1.0,
                        color="#111111" if main else PALETTE[(j + 1) % len(PALETTE)],
                        label=s, zorder=3 if main else 2)
            ax.axhline(0.0, color="#888888", lw=0.6)
            loc = mdates.AutoDateLocator(minticks=3, maxticks=6)
            ax.xaxis.set_major_locator(loc)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
            ax.set_title((weight_labels or {}).get(w, w.upper()))
            ax.set_ylabel("cumulative H-L return (%)")
        axes[0][-1].legend(fontsize=7, loc="upper left")
    return fig


def universe_plot(universe: pd.DataFrame, images_per_year: dict[str, pd.Series] | None = None) -> Figure:
    """Stocks in the panel per year (bars) and images per year of each image set (lines, right axis).

    Args:
        universe: index year (int), column n_stocks (int).
        images_per_year: image-set name -> Series (index year, values n_images).
    """
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8.0, 2.8), layout="constrained")
        ax = fig.subplots()
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
        ax.legend(handles, labels, fontsize=7, loc="upper left")
        if len(years):
            step = max(1, int(np.ceil(len(years) / 14)))
            ax.set_xticks(years[::step])
    return fig
