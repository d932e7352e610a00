"""Evaluation figures; each function returns a matplotlib Figure (Agg backend, never shown).

Save with :func:`pipeline.io.write_figure` (atomic, closes the figure).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from pipeline.evaluate.conventions import DECILES, HL, decile_label, weighting_label  # noqa: E402


def decile_bars(perf: pd.DataFrame, mktcap_is_proxy: bool, title: str = "",
                weights: tuple[str, ...] | list[str] = ("ew", "vw")) -> Figure:
    """Annualised mean return per decile (Low..High, H-L), one bar group per weighting.

    Args:
        perf: index (weighting, decile str), column ann_ret (decimal).
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [str(d) for d in DECILES] + [HL]
    x = np.arange(len(labels))
    width = 0.8 / max(len(weights), 1)
    for j, w in enumerate(weights):
        vals = [perf["ann_ret"].get((w, lab), np.nan) for lab in labels]
        ax.bar(x + (j - (len(weights) - 1) / 2) * width, np.asarray(vals, dtype=float) * 100, width,
               label=weighting_label(w, mktcap_is_proxy))
    ax.set_xticks(x, [decile_label(lab) if lab != HL else HL for lab in labels])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("annualised mean return (%)")
    ax.set_xlabel("decile of the signal (Low = lowest)")
    ax.set_title(title or "Decile portfolio returns")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def cumulative_hl(returns: pd.DataFrame, mktcap_is_proxy: bool, title: str = "",
                  weights: tuple[str, ...] | list[str] = ("ew", "vw")) -> Figure:
    """Cumulative sum of per-period H-L returns over time (arithmetic, in %), one line per weighting.

    Args:
        returns: long table date, weighting, decile, ret (from evaluate_signal).
    """
    fig, ax = plt.subplots(figsize=(8, 4))
    for w in weights:
        s = returns[(returns["weighting"] == w) & (returns["decile"] == HL)]
        s = s.sort_values("date")
        ax.plot(pd.to_datetime(s["date"]), s["ret"].cumsum().to_numpy() * 100,
                label=weighting_label(w, mktcap_is_proxy))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("cumulative H-L return (%, summed)")
    ax.set_title(title or "Long-short (High minus Low) portfolio")
    ax.legend(frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def p_up_histogram(p_up: np.ndarray, title: str = "", bins: int = 50) -> Figure:
    """Histogram of predicted up-probabilities with the 0.5 decision threshold marked."""
    p = np.asarray(p_up, dtype=float)
    p = p[np.isfinite(p)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(p, bins=bins, color="0.35")
    ax.axvline(0.5, color="crimson", lw=1, ls="--", label="0.5")
    ax.set_xlabel("P(up)")
    ax.set_ylabel("stock-periods")
    ax.set_title(title or f"Out-of-sample P(up), n = {len(p):,}")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def reliability_diagram(table: pd.DataFrame, ax=None, label: str = "CNN", color: str | None = None):  # noqa: ANN001, ANN201
    """Realised up share against mean P(up) per bin (a :func:`calibration.reliability_table`), with
    +-2 binomial standard errors and the diagonal of perfect calibration (drawn once per Axes, so
    several tables can share one). Returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
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
    ax.legend(frameon=False, loc="upper left")
    return ax


def share_up_by_year(table: pd.DataFrame, ax=None):  # noqa: ANN001, ANN201
    """Share predicted up (P > 0.5), mean P(up) and realised share up per year (a
    :func:`calibration.by_year` table). Returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    years = table.index.to_numpy()
    ax.plot(years, table["share_up_pred"] * 100, "o-", label="predicted up (P > 0.5)")
    ax.plot(years, table["mean_p_up"] * 100, "s--", ms=3, label="mean P(up)")
    ax.plot(years, table["share_up_realised"] * 100, "k^-", label="realised up")
    ax.axhline(50, color="0.6", lw=0.8)
    ax.set_ylabel("% of stock-periods")
    ax.set_xlabel("year")
    ax.set_title("Share up by year: predicted vs realised")
    ax.legend(frameon=False, fontsize=8)
    return ax
