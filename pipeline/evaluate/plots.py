"""Evaluation figures; each returns a matplotlib Figure, or draws on a given Axes and returns it.

Figures are built with the object API (matplotlib.figure.Figure), so importing this module sets
no backend and touches no global pyplot state: a notebook keeps its inline figures.

Save with :func:`pipeline.io.write_figure` (atomic).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.evaluate.conventions import DECILES, HL, IC_ROLLING_PERIODS, decile_label, weighting_label
from pipeline.evaluate.hl_analysis import cumulative_return


def decile_bars(perf: pd.DataFrame, mktcap_is_proxy: bool, title: str = "",
                weights: tuple[str, ...] | list[str] = ("ew", "vw")) -> Figure:
    """Annualised mean return per decile (Low..High, H-L), one bar group per weighting.

    Args:
        perf: index (weighting, decile str), column ann_ret (decimal).
    """
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
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
                  weights: tuple[str, ...] | list[str] = ("ew", "vw"),
                  net: pd.DataFrame | None = None, cost_bps: float | None = None) -> Figure:
    """Cumulative H-L return over time, one line per weighting: the running sum of per-period
    returns (conventions: summed, not compounded; :func:`hl_analysis.cumulative_return`), in %.

    Args:
        returns: long table date, weighting, decile, ret (from evaluate_signal).
        net: optional long table date, weighting, net (per-period net-of-cost H-L return, NaN where
            undefined), drawn dashed in the colour of the gross line; ``cost_bps`` labels it.
    """
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for w in weights:
        s = returns[(returns["weighting"] == w) & (returns["decile"] == HL)]
        c = cumulative_return(s.set_index(pd.to_datetime(s["date"]))["ret"])
        (line,) = ax.plot(c.index, c.to_numpy() * 100, label=weighting_label(w, mktcap_is_proxy))
        if net is not None:
            n = net[net["weighting"] == w]
            cn = cumulative_return(n.set_index(pd.to_datetime(n["date"]))["net"])
            lab = f"{weighting_label(w, mktcap_is_proxy)}, net of " + (
                f"{cost_bps:g} bp" if cost_bps is not None else "costs")
            ax.plot(cn.index, cn.to_numpy() * 100, ls="--", color=line.get_color(), label=lab)
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
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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
        ax = Figure(figsize=(5, 5)).subplots()
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
        ax = Figure(figsize=(8, 3.5)).subplots()
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


def ic_bars(ic: pd.DataFrame, ax=None, window: int = IC_ROLLING_PERIODS, title: str = ""):  # noqa: ANN001, ANN201
    """Per-date information coefficient as bars with its ``window``-period rolling mean as a line
    (the line starts once ``window`` defined ICs are available). Returns the Axes.

    Args:
        ic: DataFrame with date and ic (Spearman, per rebalance date; from metrics.ic_by_date).
    """
    if ax is None:
        ax = Figure(figsize=(8, 3.5)).subplots()
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
    ax.legend(frameon=False, fontsize=8)
    ax.figure.autofmt_xdate()
    return ax
