"""Daily records -> k-day bars, for charts of a long window drawn with few bars (METHOD 11).

An image set ``I{B}x{k}/{freq}`` (e.g. ``I5x4/month``) covers ``D = B * k`` trading days drawn as
``B`` bars of ``k`` days each, the size of an I{B} image, so an I{B} model can be applied to it
unchanged (the paper's time-scale transfer, JF Tables 11-12). The bars are built from the same
``2D``-record blocks the daily chart of the window would use (``windows.gather_blocks`` with
window D), and handed to the ordinary renderer as a ``2B``-row block of B-bar charts: the
renderer's rules (normalisation, scale, moving average over B bars, volume) and its exactness
apply to the bars unchanged.

A bar of days ``j = 0 .. k-1`` (oldest first, ``e = k-1`` its last day) takes, with
``G_j = prod_{i=j+1..e} (1 + ret_i)`` the growth from day j's close to the bar's last close:

    open    |O_0| / |C_0| / G_0 * |C_e|           the first day's open
    high    max_j |H_j| / |C_j| / G_j * |C_e|      the highest high (missing days skipped)
    low     min_j |L_j| / |C_j| / G_j * |C_e|      the lowest low
    close   |C_e|                                  the last close
    volume  sum of the days' volumes that are present (missing when none is)
    ret     prod_j (1 + ret_j) - 1                 the compounded return

Each day's prices enter through their ratio to that day's close, chained to the bar's last close
by returns, exactly as the renderer treats daily rows (METHOD 2.3): where prices and returns agree
(no split or other event inside the bar) the bar's high is simply the highest raw high, and a
split inside a bar cannot mix pre- and post-split prices. A day without a close contributes no
open/high/low; a bar whose last close is missing has no open/high/low/close (its glyph is not
drawn, as for a daily row).
"""

from __future__ import annotations

import numpy as np

from pipeline.images.render import N_COLUMNS

_O, _H, _L, _C, _VOL, _RET = range(N_COLUMNS)


def aggregate_bars(block: np.ndarray, n_hist: np.ndarray, bar_days: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate blocks of daily records into blocks of ``bar_days``-day bars.

    block: float64 (n, 2D, 6), columns [open, high, low, close, volume, ret] (render.N_COLUMNS),
        oldest row first, the last ``n_hist`` rows real (``windows.gather_blocks`` with window D);
        2D must be a multiple of ``bar_days``.
    n_hist: integer (n,), real records per block (0..2D).
    Returns (bars, n_bars): bars float64 (n, 2D / bar_days, 6), same columns, the last bar ending
    on the block's last day; n_bars int64 (n,) = n_hist // bar_days, the complete bars (older rows,
    including a partial oldest bar, are NaN). These are the renderer's ``rows`` and ``n_hist``.
    """
    if bar_days < 1:
        raise ValueError(f"bar_days must be >= 1, got {bar_days}")
    n, rows, cols = block.shape
    if cols != N_COLUMNS or rows % bar_days:
        raise ValueError(f"block must be (n, a multiple of {bar_days}, {N_COLUMNS}), got {block.shape}")
    n_hist = np.asarray(n_hist).astype(np.int64)
    if bar_days == 1:  # daily bars: the rows themselves (1 + r - 1 need not give r back exactly)
        return block.copy(), n_hist
    n_bars = n_hist // bar_days
    m = rows // bar_days
    g = block.reshape(n, m, bar_days, cols)
    factor = 1.0 + g[..., _RET]  # (n, m, k)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # tail[..., j] = prod(factor[..., j:]): growth from the close before day j to the bar's last.
        tail = np.cumprod(factor[..., ::-1], axis=-1)[..., ::-1]
        growth = np.ones_like(factor)  # G_j: day j's close -> the bar's last close
        growth[..., :-1] = tail[..., 1:]
        last_close = np.abs(g[..., -1, _C])  # (n, m)
        to_last = last_close[..., None] / (np.abs(g[..., _C]) * growth)  # (n, m, k)
        out = np.empty((n, m, cols))
        out[..., _O] = np.abs(g[..., 0, _O]) * to_last[..., 0]
        out[..., _H] = np.fmax.reduce(np.abs(g[..., _H]) * to_last, axis=-1)
        out[..., _L] = np.fmin.reduce(np.abs(g[..., _L]) * to_last, axis=-1)
        out[..., _C] = last_close
        vol = g[..., _VOL]
        present = ~np.isnan(vol)
        out[..., _VOL] = np.where(present.any(axis=-1), np.where(present, vol, 0.0).sum(axis=-1), np.nan)
        out[..., _RET] = tail[..., 0] - 1.0
    out[np.arange(m)[None, :] < (m - n_bars)[:, None]] = np.nan
    return out, n_bars
