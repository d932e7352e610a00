"""Market-capitalisation proxy for free data (docs/method.md 3.5).

Free sources have no shares outstanding, so value weights use

    MarketCapProxy_t = mean of close_s * volume_s over the stock's last ``window`` records s <= t

in dollars (split-invariant: a split scales close by 1/k and volume by k). The record at t is
included: like CRSP's ``|PRC| * SHROUT`` it is the value known at the close of t.

Missing volumes (zero volume is missing, METHOD 4.6) are skipped inside the window; the window is
still ``window`` *records* long. **min_periods** (:func:`proxy_min_periods`): the proxy is NaN
until the window holds at least ``ceil(window / 3)`` present dollar volumes (20 for the default
60). Reason: a one- or two-day average is dominated by listing-day or event volume, while
requiring the full window would leave every stock without a weight for its first three months;
20 records is one month, the length of the baseline I20 chart, so every I20 image of a stock with
ordinary volume data has a proxy. Downstream, value-weighted portfolios drop NaN caps (METHOD 3.2).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def proxy_min_periods(window: int) -> int:
    """Present dollar volumes required in the trailing window: ``ceil(window / 3)``, at least 1."""
    if window < 1:
        raise ValueError(f"panel.mktcap_proxy_window must be >= 1, got {window}")
    return max(1, math.ceil(window / 3))


def segment_starts(group: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a grouped (sorted) array (n,) -> (k,) int64."""
    g = np.asarray(group)
    if g.size == 0:
        return np.empty(0, np.int64)
    return np.flatnonzero(np.r_[True, g[1:] != g[:-1]])


def dollar_volume_proxy(close: np.ndarray, volume: np.ndarray, starts: np.ndarray,
                        window: int = 60, min_periods: int | None = None) -> np.ndarray:
    """Trailing mean of ``close * volume`` per stock over ``window`` records, inclusive of t.

    close, volume: float64 (n,), rows grouped by stock and sorted by date within a stock; NaN =
    missing (skipped). starts: int (k,), first row of each stock (sorted, starts[0] == 0).
    Returns float64 (n,) in $ (units of close times units of volume); NaN where fewer than
    ``min_periods`` (default :func:`proxy_min_periods`) present values lie in the window.

    Vectorised: per-stock cumulative sums (reset at every stock so that precision depends on one
    stock's history only), differenced ``window`` rows apart.
    """
    close = np.asarray(close, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    n = close.shape[0]
    if min_periods is None:
        min_periods = proxy_min_periods(window)
    if n == 0:
        return np.empty(0, np.float64)
    dv = close * volume
    present = ~np.isnan(dv)
    dv[~present] = 0.0
    lengths = np.diff(np.r_[starts, n])
    seg = np.repeat(np.arange(len(starts), dtype=np.int32), lengths)
    # Running sums restarted at each stock: pandas' grouped cumsum keeps the float error relative
    # to one stock's history (a global cumsum would carry the whole market's).
    cs = pd.Series(dv).groupby(seg, sort=False).cumsum().to_numpy(copy=True)
    del dv
    cn = np.cumsum(present, dtype=np.int64)  # integers: exact, so a global sum minus an offset
    cn -= np.repeat(np.r_[0, cn[starts[1:] - 1]], lengths)
    del present
    # Window (i-window, i]: subtract the running sum at i-window when that row is the same stock.
    if window < n:
        same = seg[window:] == seg[:-window]
        cs[window:] -= np.where(same, cs[:-window], 0.0)
        cn[window:] -= np.where(same, cn[:-window], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cs / cn
    out[cn < min_periods] = np.nan
    return out
