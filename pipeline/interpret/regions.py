"""Where the synthetic market's planted signal lives in a chart, and how much of a map falls there.

Geometry (METHOD 2.1-2.6, from ``pipeline.images.render.layout``): an image is H rows by 3W columns;
day d owns columns 3d (open tick), 3d+1 (high-low bar and volume bar) and 3d+2 (close tick); the
price area is rows 0..P-1, row P is blank and the volume area rows P+1..H-1. The planted features
of docs/synthetic.md section 2 are all read at the image date, i.e. at the right end of the chart:

* reversal ``rev = log(C_t / C_{t-5})``: the last five closes -> :func:`last_days_mask` (columns
  3(W-k)..3W-1, every row);
* volume surge x direction: the last volume bar against the others -> :func:`volume_mask` (the
  volume area; also its last k days), read on surge days;
* trend ``log(C_t / MA20_t)``: the close against the moving average -> :func:`ma_line_masks`, the
  exact pixels of the MA line, re-drawn from the panel and checked against the stored image.

**The concentration ratio** of a non-negative map A (N, H, 3W) on a region R (one mask for all
images or one per image) is, per image i,

    ratio_i = ( sum_{p in R_i} A_i[p] / sum_p A_i[p] ) / ( |R_i| / (H * 3W) ),

the share of the map's mass in the region divided by the region's share of the image area: 1 when
the map is spread evenly, above 1 when it concentrates in the region, at most (H * 3W) / |R_i|.
Images whose map is all zero, or whose region is empty, get NaN and are left out of the summary
(:func:`concentration_summary`: mean, median, share above 1 and count).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.images.render import (_ma_column_runs, adjust_prices, layout,
                                    render_windows, rolling_sum_like_pandas)


def last_days_mask(window: int, k: int, volume: bool = True) -> np.ndarray:
    """bool (H, 3W): every row of the last ``k`` days' columns 3(W-k)..3W-1."""
    h, w3, _, _ = layout(window, volume)
    if not 1 <= k <= window:
        raise ValueError(f"k must be in 1..{window}, got {k}")
    m = np.zeros((h, w3), dtype=bool)
    m[:, 3 * (window - k):] = True
    return m


def volume_mask(window: int, last_k: int | None = None, volume: bool = True) -> np.ndarray:
    """bool (H, 3W): the volume area rows P+1..H-1 (only the last ``last_k`` days' columns when
    given). All False for charts drawn without volume."""
    h, w3, p_rows, v_rows = layout(window, volume)
    m = np.zeros((h, w3), dtype=bool)
    if v_rows:
        m[p_rows + 1:, :] = True
        if last_k is not None:
            m[:, : 3 * (window - last_k)] = False
    return m


def price_mask(window: int, volume: bool = True) -> np.ndarray:
    """bool (H, 3W): the price area rows 0..P-1."""
    h, w3, p_rows, _ = layout(window, volume)
    m = np.zeros((h, w3), dtype=bool)
    m[:p_rows] = True
    return m


def ma_line_masks(blocks: np.ndarray, n_hist: np.ndarray, window: int, volume: bool = True,
                  check_images: np.ndarray | None = None) -> np.ndarray:
    """Exact MA-line pixels of each chart, bool (n, H, 3W).

    blocks, n_hist: the renderer's input (``render_windows``: float64 (n, 2W, 6) rows [open, high,
    low, close, volume, ret], oldest first, front-padded; real rows per window). A window with
    fewer than 2W real rows has no MA line (all False). The heights follow METHOD 2.3-2.5 with the
    renderer's own functions (adjusted prices, pandas-exact rolling mean, the per-column Bresenham
    runs); ``check_images`` (uint8 (n, H, 3W), e.g. the stored images) is compared with a fresh
    render of the blocks and every mask pixel must be ink there, else ValueError: a mask that does
    not match the picture would make the measure meaningless.
    """
    blocks = np.asarray(blocks, dtype=np.float64)
    n_hist = np.asarray(n_hist, dtype=np.int64)
    h, w3, p_rows, _ = layout(window, volume)
    n = blocks.shape[0]
    masks = np.zeros((n, h, w3), dtype=bool)
    has = n_hist >= 2 * window
    if has.any():
        b = blocks[has]
        o, hi_, lo_, c_adj = adjust_prices(b, window)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inv = (1.0 / c_adj[:, window])[:, None]
            close = c_adj * inv
            ma = rolling_sum_like_pandas(close, window, window) / window
            prices = np.abs(np.stack([o * inv, hi_ * inv, lo_ * inv, close[:, window:], ma], axis=1))
            flat = prices.reshape(len(b), -1)
            minp, maxp = np.fmin.reduce(flat, axis=1), np.fmax.reduce(flat, axis=1)
            y = np.around((prices[:, 4] - minp[:, None]) * ((p_rows - 1.0) / (maxp - minp))[:, None])
        yma = np.where(np.isfinite(y), y, -1).astype(np.int16)
        lo, hi = _ma_column_runs(yma, window)  # (m, 3W) heights from the bottom of the price area
        rows = np.arange(p_rows)[None, :, None]
        height = (p_rows - 1) - rows  # the height each row stands for
        masks[has, :p_rows] = (height >= lo[:, None, :]) & (height <= hi[:, None, :])
    if check_images is not None:
        drawn, status = render_windows(blocks, n_hist, window, ma=True, volume=volume)
        check = np.asarray(check_images)
        if check.shape != drawn.shape or not np.array_equal(drawn[status == -1], check[status == -1]):
            raise ValueError("ma_line_masks: the blocks do not re-draw the given images (wrong rows?)")
        if (masks & (check == 0)).any():
            raise ValueError("ma_line_masks: an MA pixel is background in the image")
    return masks


def concentration(maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per-image concentration ratio (module docstring), float64 (N,), NaN where undefined.

    maps: non-negative (N, H, W); region: bool (H, W) shared or (N, H, W) per image.
    """
    a = np.asarray(maps, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"maps must be (N, H, W); got {a.shape}")
    if (a < 0).any():
        raise ValueError("concentration needs non-negative maps (take |saliency|)")
    r = np.broadcast_to(np.asarray(region, dtype=bool), a.shape)
    total = a.sum(axis=(1, 2))
    inside = (a * r).sum(axis=(1, 2))
    area = r.sum(axis=(1, 2)) / float(a.shape[1] * a.shape[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (inside / total) / area
    return np.where((total > 0) & (area > 0), out, np.nan)


def concentration_summary(ratio: np.ndarray) -> dict:
    """{"mean", "median", "share_above_1", "n"} of per-image ratios (NaNs left out)."""
    r = np.asarray(ratio, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return {"mean": None, "median": None, "share_above_1": None, "n": 0}
    return {"mean": float(r.mean()), "median": float(np.median(r)),
            "share_above_1": float((r > 1).mean()), "n": int(r.size)}


def planted_signal_table(maps: dict[str, np.ndarray], regions: dict[str, np.ndarray],
                         subsets: dict[str, np.ndarray]) -> pd.DataFrame:
    """Concentration of every map on every region, over every subset of images.

    maps: method -> non-negative (N, H, W); regions: name -> bool (H, W) or (N, H, W);
    subsets: name -> bool (N,) selecting images (e.g. "all", "surge days").
    Returns one row per (method, region, subset): mean, median, share_above_1, n.
    """
    rows = []
    for method, a in maps.items():
        for region, r in regions.items():
            ratio = concentration(a, r)
            for subset, keep in subsets.items():
                rows.append({"method": method, "region": region, "subset": subset,
                             **concentration_summary(ratio[np.asarray(keep, dtype=bool)])})
    return pd.DataFrame(rows, columns=["method", "region", "subset", "mean", "median",
                                       "share_above_1", "n"])
