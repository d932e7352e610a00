"""Vectorised OHLC chart renderer (docs/method.md section 2; docs/golden.md).

Reproduces the authors' renderer (``adjust_price`` + pandas rolling MA + PIL drawing) byte for byte
(all 891 golden cases), but for a whole batch of windows at once: every step is a numpy operation
over all windows of a chunk; the only Python loops run over the (at most 2W) rows of the block, the
four columns of an MA segment, or chunks.

Input rows, per window, oldest first, columns ``[open, high, low, close, volume, ret]``, padded at the
front with NaN rows; ``n_hist`` says how many rows at the end are real.  Output images are uint8
``(H, 3W)`` with 0 background and 255 ink, row 0 at the top (highest price):

    rows 0 .. P-1      price area, y(p) = 0 at the bottom row P-1        (P = H - V - 1)
    row  P             gap row (always 0)                                 (only with volume)
    rows P+1 .. H-1    volume area, bars grow up from row H-1             (V = int(H / 5))

Without volume the price area takes all H rows (P = H). Rejected windows are all-zero images with a
status code (``REJECTION_REASONS``); drawn windows have status -1.

Exactness notes (why the arithmetic looks the way it does):
- adjusted prices use the authors' operation order ``Cadj / |C| * |X|`` in float64, and the rescale
  multiplies by ``(1.0 / s)``; a flat price can then be 1 ulp off 1.0, which decides between a
  degenerate image and a status-5 rejection (golden ``edit_constant_price`` vs ``real_flat``);
- the MA is pandas' ``Series.rolling(W).sum() / W``, i.e. Kahan-compensated running add/remove
  with separate compensations and pandas' "all values equal" shortcut (GH#42064), replayed here
  row by row across the batch (``rolling_sum_like_pandas``);
- the MA line is PIL's ``ImageDraw.line`` Bresenham for dx = 3 segments in closed form (METHOD 2.5).
  In each pixel column a segment covers one contiguous vertical run, and the two segments meeting
  at a day centre share the pixel y(MA_d), so every column's MA pixels form ONE vertical run. The
  price area is therefore, per column: one MA run, one high-low run (centre columns) and one tick
  pixel (open: left and centre column; close: right column). Each layer of runs is painted for all
  images of a chunk with broadcast comparisons on a (row, image, column) canvas, then transposed.
"""

from __future__ import annotations

import numpy as np

from pipeline.images.store import IMAGE_SHAPES

__all__ = [
    "IMAGE_SHAPES",
    "REJECTION_REASONS",
    "STATUS_IMAGE",
    "N_COLUMNS",
    "layout",
    "adjust_prices",
    "rolling_sum_like_pandas",
    "ma_segment_runs",
    "render_windows",
]

STATUS_IMAGE = -1
"""Status of a window that produced an image."""

REJECTION_REASONS: dict[int, str] = {
    0: "R0_no_record_on_date",  # assigned by the windowing code, never by render_windows
    1: "R1_short_history",  # fewer than W real rows
    2: "R2_bad_first_raw_close",  # block's first raw close is 0 or NaN
    3: "R3_bad_first_chart_close",  # adjusted close on the first chart day is 0 or NaN
    4: "R4_chart_length_or_first_close",  # round(first chart close, 3) != 1 (only if 1/s overflows)
    5: "R5_degenerate_scale",  # maxp == minp, or either NaN (or not finite, see render_windows)
}

N_COLUMNS = 6
"""Columns of ``rows``: open, high, low, close, volume, ret."""
_O, _H, _L, _C, _VOL, _RET = range(N_COLUMNS)

# Draw chunks of about this many canvas bytes so the temporaries stay in cache; do the per-window
# arithmetic on _NUMERIC_CHUNKS draw chunks at once (its row loops pay Python overhead per call).
_CHUNK_BYTES = 1 << 21
_NUMERIC_CHUNKS = 4


def layout(window: int, volume: bool = True) -> tuple[int, int, int, int]:
    """Image geometry ``(H, width, P, V)`` for a W-day image (METHOD 2.1).

    H rows by width = 3W columns; P price rows; V volume rows (0 without volume, then P = H).
    """
    if window not in IMAGE_SHAPES:
        raise ValueError(f"window must be one of {sorted(IMAGE_SHAPES)}, got {window!r}")
    height, width = IMAGE_SHAPES[window]
    if volume:
        vol_rows = int(height / 5)
        return height, width, height - vol_rows - 1, vol_rows
    return height, width, height, 0


def adjust_prices(block: np.ndarray, first_row: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The authors' ``adjust_price``: rebuild prices from returns, for a batch of blocks.

    block: float64 (m, L, 6), columns [open, high, low, close, volume, ret], row 0 the oldest.
    Returns adjusted (open, high, low, close): open/high/low float64 (m, L - first_row) for rows
    first_row..L-1 (the renderer only needs the chart rows), close float64 (m, L) for all rows:

    - row 0: ``Cadj = 1``, ``Xadj = |X_0| / |C_0|``;
    - row i > 0: ``Cadj_i = (1 + Ret_i) * pre``; ``Xadj_i = Cadj_i / |C_i| * |X_i|`` (this order);
      ``pre = Cadj_i`` only where ``Cadj_i`` is not NaN. Row 0's Ret is never used.

    The caller rejects blocks whose first raw close is 0 or NaN (status 2) before using these.
    """
    m, n_rows, _ = block.shape
    if not 0 <= first_row < n_rows:
        raise ValueError(f"first_row must be in 0..{n_rows - 1}, got {first_row}")
    factor = 1.0 + block[:, 1:, _RET]  # (m, L-1): the (1 + Ret_i) of rows 1..L-1
    nan_factor = np.isnan(factor)
    with np.errstate(over="ignore", invalid="ignore"):
        # pre after row i is the running product of the non-NaN factors (NaN rows leave it as is);
        # multiply.accumulate is sequential, so pre_i = pre_{i-1} * f_i exactly as in the loop.
        pre = np.multiply.accumulate(np.where(nan_factor, 1.0, factor), axis=1)
        exact = bool(np.isfinite(pre).all()) and not np.isinf(factor).any()
    cadj = np.empty((m, n_rows))
    cadj[:, 0] = 1.0
    if n_rows > 1:
        if exact:
            cadj[:, 1] = factor[:, 0]  # (1 + Ret_1) * 1
            np.multiply(factor[:, 1:], pre[:, :-1], out=cadj[:, 2:])
        else:
            # inf * 0 can make Cadj NaN where Ret is not: replay the loop literally, row by row.
            pre_i = np.ones(m)
            with np.errstate(over="ignore", invalid="ignore"):
                for i in range(1, n_rows):
                    np.multiply(factor[:, i - 1], pre_i, out=cadj[:, i])
                    np.copyto(pre_i, cadj[:, i], where=~np.isnan(cadj[:, i]))
    out = []
    lo = max(first_row, 1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        abs_c = np.abs(block[:, first_row:, _C])
        ratio = cadj[:, lo:] / abs_c[:, lo - first_row:]
        for col in (_O, _H, _L):
            x = np.abs(block[:, first_row:, col])
            adj = np.empty_like(x)
            if first_row == 0:
                adj[:, 0] = x[:, 0] / abs_c[:, 0]
            np.multiply(ratio, x[:, lo - first_row:], out=adj[:, lo - first_row:])
            out.append(adj)
    return out[0], out[1], out[2], cadj


def rolling_sum_like_pandas(values: np.ndarray, window: int, rows_out: int | None = None) -> np.ndarray:
    """``pd.Series(values[j]).rolling(window).sum()`` for every row j, bit for bit.

    values: float64 (m, L), one series per row, oldest first. Returns float64 (m, rows_out): the
    rolling sums at the last ``rows_out`` positions (default all L), NaN where the window holds
    fewer than ``window`` non-NaN values (pandas' default min_periods = window).

    Replays pandas' ``roll_sum`` (pandas/_libs/window/aggregations.pyx, fixed window): a running
    Kahan sum where, at position i, value i-window is removed (own compensation) and then value i
    is added (own compensation), NaNs skipped; if the last ``nobs`` non-NaN values are all equal the
    result is ``value * nobs`` instead of the running sum (pandas GH#42064). Vectorised across
    series, one step per position.
    """
    m, n_rows = values.shape
    rows_out = n_rows if rows_out is None else rows_out
    if not 1 <= rows_out <= n_rows:
        raise ValueError(f"rows_out must be in 1..{n_rows}, got {rows_out}")
    vals = np.ascontiguousarray(values.T)  # (L, m): each step reads one contiguous vector
    first_out = n_rows - rows_out
    out = np.empty((rows_out, m))
    total = np.zeros(m)
    comp_add = np.zeros(m)
    comp_rem = np.zeros(m)
    notnan = ~np.isnan(vals)
    with np.errstate(invalid="ignore", over="ignore"):
        if notnan.all():
            neg = -vals  # removal adds -value; negate once, not per step
            y = np.empty(m)
            t = np.empty(m)
            for i in range(n_rows):
                # Same operations, in the same order, as pandas' remove_sum / add_sum, in place.
                if i >= window:
                    np.subtract(neg[i - window], comp_rem, out=y)
                    np.add(total, y, out=t)
                    np.subtract(t, total, out=comp_rem)
                    np.subtract(comp_rem, y, out=comp_rem)
                    total, t = t, total
                np.subtract(vals[i], comp_add, out=y)
                np.add(total, y, out=t)
                np.subtract(t, total, out=comp_add)
                np.subtract(comp_add, y, out=comp_add)
                total, t = t, total
                if i >= first_out:
                    out[i - first_out] = total
            if window <= n_rows:
                # Without NaNs nobs = min(i + 1, window); the "all equal" shortcut applies where the
                # last `window` values are equal, i.e. no change of value inside the window.
                change = np.zeros((n_rows, m), dtype=np.int32)
                change[1:] = vals[1:] != vals[:-1]
                csum = np.cumsum(change, axis=0)
                pos = np.arange(first_out, n_rows)
                full = pos >= window - 1
                lag = np.where(full, pos - window + 1, 0)
                same = (csum[pos] - csum[lag]) == 0
                shortcut = same & full[:, None]
                out = np.where(shortcut, vals[pos] * window, out)
            out[~(np.arange(first_out, n_rows) >= window - 1)] = np.nan
            return np.ascontiguousarray(out.T)
        prev = np.full(m, np.nan)
        same_run = np.zeros(m, dtype=np.int64)
        nobs = np.zeros(m, dtype=np.int64)
        for i in range(n_rows):
            if i >= window:
                ok = notnan[i - window]
                y = -vals[i - window] - comp_rem
                t = total + y
                np.copyto(comp_rem, (t - total) - y, where=ok)
                np.copyto(total, t, where=ok)
                nobs -= ok
            ok = notnan[i]
            v = vals[i]
            y = v - comp_add
            t = total + y
            np.copyto(comp_add, (t - total) - y, where=ok)
            np.copyto(total, t, where=ok)
            nobs += ok
            np.copyto(same_run, np.where(v == prev, same_run + 1, 1), where=ok)
            np.copyto(prev, v, where=ok)
            if i >= first_out:
                res = np.where(same_run >= nobs, prev * nobs, total)
                out[i - first_out] = np.where(nobs >= window, res, np.nan)
    return np.ascontiguousarray(out.T)


def _segment_column_run(y0: np.ndarray, n: np.ndarray, s: np.ndarray, col: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """y-range (lo, hi) of a dx=3 Bresenham segment's pixels in its column x0 + col (col 0..3);
    n = |y1 - y0|, s = sign(y1 - y0). See ma_segment_runs."""
    j_single = (2 * col * n + 3) // 6
    # ceil(a / 6) == -((-a) // 6) for integers of any sign
    j_lo = np.where(n <= 3, j_single, np.maximum(-((n * (1 - 2 * col)) // 6), 0))
    j_hi = np.where(n <= 3, j_single, np.minimum(-((-n * (2 * col + 1)) // 6) - 1, n))
    a = y0 + s * j_lo
    b = y0 + s * j_hi
    return np.minimum(a, b), np.maximum(a, b)


def ma_segment_runs(y0: np.ndarray, y1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of PIL ``ImageDraw.line((x0, y0, x0 + 3, y1), width=1)``, column by column.

    y0, y1: integer arrays of equal shape S. Returns (lo, hi), int64 arrays of shape S + (4,):
    column x0 + k holds exactly the pixels y = lo[..., k] .. hi[..., k] (inclusive; never empty).
    Closed form of METHOD 2.5 with n = |y1 - y0|, s = sign(y1 - y0): for n <= 3 one pixel per
    column, j_k = floor(k n / 3 + 1/2); for n > 3 the pixels (x0 + floor(3 j / n + 1/2), y0 + s j),
    j = 0..n, so column k holds j in [ceil(n (2k-1) / 6), ceil(n (2k+1) / 6) - 1] ∩ [0, n]; the run
    is y0 + s * j over that range. Ties round toward the end point.
    """
    y0 = np.asarray(y0, dtype=np.int64)
    d = np.asarray(y1, dtype=np.int64) - y0
    n, s = np.abs(d), np.sign(d)
    runs = [_segment_column_run(y0, n, s, col) for col in range(4)]
    return np.stack([r[0] for r in runs], axis=-1), np.stack([r[1] for r in runs], axis=-1)


def _check_inputs(rows: np.ndarray, n_hist: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    if window not in IMAGE_SHAPES:
        raise ValueError(f"window must be one of {sorted(IMAGE_SHAPES)}, got {window!r}")
    if not isinstance(rows, np.ndarray) or rows.ndim != 3 or rows.shape[1:] != (2 * window, N_COLUMNS):
        shape = getattr(rows, "shape", type(rows).__name__)
        raise ValueError(
            f"rows must be an array of shape (n, {2 * window}, {N_COLUMNS}) for window={window} "
            f"(columns open, high, low, close, volume, ret), got {shape}")
    if rows.dtype != np.float64:
        raise ValueError(f"rows must be float64, got {rows.dtype}")
    n_hist = np.asarray(n_hist)
    if n_hist.shape != (rows.shape[0],):
        raise ValueError(f"n_hist must have shape ({rows.shape[0]},) to match rows, got {n_hist.shape}")
    if n_hist.dtype.kind not in "iu":
        raise ValueError(f"n_hist must be an integer array, got dtype {n_hist.dtype}")
    bad = np.flatnonzero((n_hist < 0) | (n_hist > 2 * window))
    if bad.size:
        raise ValueError(f"n_hist must be in 0..{2 * window}; window {bad[0]} has n_hist={n_hist[bad[0]]} "
                         f"({bad.size} windows out of range)")
    return rows, n_hist.astype(np.int64)


def render_windows(rows: np.ndarray, n_hist: np.ndarray, window: int, ma: bool = True,
                   volume: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render a batch of W-day chart images exactly as the authors' code does.

    rows: float64 (n, 2W, 6), columns [open, high, low, close, volume, ret], oldest first; the last
        ``n_hist[j]`` rows of window j are real, the rest is ignored (NaN padding by convention).
        Prices in any unit (only ratios matter), volume in shares, ret a simple return (0.01 = 1 %).
    n_hist: integer (n,), real rows per window, 0..2W (0 is treated as too short: status 1).
    window: W, one of 5, 20, 60.
    ma: draw the W-day MA where the window has 2W real rows (otherwise, and always when False, the
        block is the last W rows only, with no MA in the line or in the scale).
    volume: draw the volume area (V = int(H/5) rows below a gap row); without it P = H.

    Returns (images, status): images uint8 (n, H, 3W), 0/255, all-zero where rejected; status int8
    (n,), -1 for an image, else a key of ``REJECTION_REASONS`` (1..5; docs/golden.md).
    Status 5 also covers a non-finite min/max (e.g. a raw close of exactly 0 inside the block makes
    an adjusted price infinite), where the authors' code would raise instead.
    """
    rows, n_hist = _check_inputs(rows, n_hist, window)
    height, width, _, _ = layout(window, volume)
    n = rows.shape[0]
    images = np.zeros((n, height, width), dtype=np.uint8)
    status = np.full(n, STATUS_IMAGE, dtype=np.int8)
    short = n_hist < window
    status[short] = 1
    with_ma = (n_hist >= 2 * window) if ma else np.zeros(n, dtype=bool)
    draw_chunk = min(max(64, _CHUNK_BYTES // (height * width)), max(n, 1))
    per_chunk = draw_chunk * _NUMERIC_CHUNKS
    work = _Workspace(window, volume, draw_chunk)
    for a in range(0, n, per_chunk):
        part = slice(a, min(n, a + per_chunk))
        live = ~short[part]
        ma_here = with_ma[part] & live
        n_ma, n_plain = int(ma_here.sum()), int((live & ~ma_here).sum())
        if n_ma + n_plain == 0:
            continue
        # Render the whole chunk in place (views, no copies) as its majority kind (MA block or
        # not); the few windows of the other kind are then rendered from a gathered copy, and the
        # too-short ones reset, overwriting whatever the majority pass made of them.
        major = n_ma >= n_plain
        status[part] = _render_block(rows[part], window, major, volume, images[part], work)
        other = a + np.flatnonzero(live & (ma_here != major))
        if other.size:
            img = np.empty((other.size, height, width), dtype=np.uint8)
            status[other] = _render_block(rows[other], window, not major, volume, img, work)
            images[other] = img
        too_short = a + np.flatnonzero(~live)
        images[too_short] = 0
        status[too_short] = 1
    return images, status


class _Workspace:
    """Scratch canvases reused by every chunk of one render_windows call (fresh large arrays per
    chunk would pay page faults on every first touch, which costs more than the drawing)."""

    def __init__(self, window: int, volume: bool, chunk: int) -> None:
        height, width, p_rows, _ = layout(window, volume)
        # (row, image, column): each comparison below is one long contiguous vector op per row.
        self.chunk = chunk
        self.canvas = np.zeros((height, chunk, width), dtype=bool)  # gap row P stays 0
        self.tmp = np.empty((p_rows, chunk, width), dtype=np.uint8)
        self.tmp_b = np.empty((p_rows, chunk, width), dtype=bool)


def _render_block(rows: np.ndarray, window: int, has_ma: bool, volume: bool, out: np.ndarray,
                  work: _Workspace) -> np.ndarray:
    """Render m windows that share the block length (2W with MA, W without) into ``out``.

    rows: float64 (m, 2W, 6); out: uint8 (m, H, 3W), overwritten (all-zero for rejected windows).
    Returns status int8 (m,).
    """
    _, _, p_rows, v_rows = layout(window, volume)
    m = rows.shape[0]
    n_block = 2 * window if has_ma else window
    block = rows[:, 2 * window - n_block:, :]
    status = np.full(m, STATUS_IMAGE, dtype=np.int8)

    first_close = block[:, 0, _C]
    status[(first_close == 0.0) | np.isnan(first_close)] = 2
    first_chart = n_block - window
    o_ch, h_ch, l_ch, c_adj = adjust_prices(block, first_chart)
    s = c_adj[:, first_chart]
    status[(status == STATUS_IMAGE) & ((s == 0.0) | np.isnan(s))] = 3
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = (1.0 / s)[:, None]
        close = c_adj * inv  # the whole block: the MA needs it
        c_ch = close[:, first_chart:]
        status[(status == STATUS_IMAGE) & (np.around(c_ch[:, 0], 3) != 1.0)] = 4
        # (m, 4|5, W): |O|, |H|, |L|, |C| [, |MA|] of the chart days (the authors' df.abs()).
        prices = np.empty((m, 5 if has_ma else 4, window))
        np.multiply(o_ch, inv, out=prices[:, 0])
        np.multiply(h_ch, inv, out=prices[:, 1])
        np.multiply(l_ch, inv, out=prices[:, 2])
        prices[:, 3] = c_ch
        if has_ma:
            np.divide(rolling_sum_like_pandas(close, window, window), window, out=prices[:, 4])
        np.abs(prices, out=prices)
        flat = prices.reshape(m, -1)
        minp = np.fmin.reduce(flat, axis=1)
        maxp = np.fmax.reduce(flat, axis=1)
        degenerate = (maxp == minp) | ~np.isfinite(minp) | ~np.isfinite(maxp)
        status[(status == STATUS_IMAGE) & degenerate] = 5
        ok = status == STATUS_IMAGE

        # The authors' __ret_to_yaxis: np.around((x - minp) * ((P - 1.0) / (maxp - minp))).
        ppu = (p_rows - 1.0) / (maxp - minp)
        y = np.around((prices - minp[:, None, None]) * ppu[:, None, None])
        y[~ok] = -1  # -1 = nothing to draw (missing value or rejected window)
        y = np.where(np.isnan(y), -1, y).astype(np.int16)
        ys = list(y.transpose(1, 0, 2))

        vh = None
        if volume:
            vol = np.abs(block[:, first_chart:, _VOL])  # (m, W): raw volume, unadjusted
            vmax = np.fmax.reduce(vol, axis=1)
            draw = (ok & ~(np.isnan(vmax) | (vmax == 0)))[:, None]
            ppv = (1.0 * v_rows / np.abs(vmax))[:, None]
            h = np.around(vol * ppv)
            draw = draw & ~np.isnan(h)
            # A present volume rounding to 0 still paints one pixel (PIL line from 0 to -1).
            vh = np.where(draw, np.maximum(np.where(draw, h, 0), 1), 0).astype(np.int16)
    for lo in range(0, m, work.chunk):
        part = slice(lo, lo + work.chunk)
        _draw([y[part] for y in ys], None if vh is None else vh[part], window, p_rows, out[part], work)
    return status


def _draw(ys: list[np.ndarray], vh: np.ndarray | None, window: int, p_rows: int,
          out: np.ndarray, work: _Workspace) -> None:
    """Paint m charts into ``out`` uint8 (m, H, 3W).

    ys: int16 (m, W) pixel heights (from the bottom of the price area) of |O|, |H|, |L|, |C| and
    optionally |MA|; -1 = nothing to draw (missing value or rejected window). vh: int16 (m, W)
    volume bar heights in pixels, 0 = no bar, or None without a volume area.

    Every column of the price area is the union of at most three pieces: one MA run, one high-low
    run (centre columns) and one tick pixel (open: left and centre; close: right). They are painted
    on a row-major canvas (row, image, column) so each comparison is one long contiguous vector op,
    then transposed into ``out``. Two run layers cover everything but an open tick lying off its
    bar in the centre column (high < low, or open outside [low, high]): layer 1 = the MA run of
    every column; layer 2 = the bar (centre columns) or the tick as a 1-row run (left: open,
    right: close); the off-bar centre open ticks are set one by one. ``work`` holds the scratch
    canvases (at least m images wide).
    """
    m, height, width = out.shape
    yo, yh, yl, yc = ys[:4]
    top_row = p_rows - 1  # image row of y = 0
    glyph = (yh >= 0) & (yl >= 0)
    has_open = glyph & (yo >= 0)
    # Per-column runs (m, 3W), uint8: rows top .. top+len-1, tested as (row - top) mod 256 < len.
    run_top = np.empty((m, width), dtype=np.uint8)
    run_len = np.empty((m, width), dtype=np.uint8)
    run_top[:, 0::3] = top_row - yo
    run_len[:, 0::3] = has_open
    run_top[:, 1::3] = top_row - yh
    run_len[:, 1::3] = np.where(glyph, yh - yl + 1, 0).clip(0)
    run_top[:, 2::3] = top_row - yc
    run_len[:, 2::3] = glyph & (yc >= 0)

    canvas = work.canvas[:, :m]
    price = canvas[:p_rows]
    rows = np.arange(p_rows, dtype=np.uint8)[:, None, None]
    tmp = work.tmp[:, :m]
    tmp_b = work.tmp_b[:, :m]
    np.subtract(rows, run_top, out=tmp)
    np.less(tmp, run_len, out=price)
    if len(ys) == 5:
        lo, hi = _ma_column_runs(ys[4], window)
        np.subtract(rows, (top_row - hi).astype(np.uint8), out=tmp)
        np.less(tmp, (hi - lo + 1).clip(0).astype(np.uint8), out=tmp_b)
        price |= tmp_b
    img, day = np.nonzero(has_open & ((yo < yl) | (yo > yh)))  # centre open ticks off the bar
    price[top_row - yo[img, day], img, 3 * day + 1] = True

    if vh is not None:
        v_rows = height - p_rows - 1
        # Volume rows P+1..H-1; a bar of height h covers the last h of them.
        thr = np.full((m, width), v_rows, dtype=np.int16)
        thr[:, 1::3] = v_rows - vh
        np.greater_equal(np.arange(v_rows, dtype=np.int16)[:, None, None], thr, out=canvas[p_rows + 1:])
    np.multiply(canvas.view(np.uint8).transpose(1, 0, 2), 255, out=out)


def _segment_offset_tables() -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables (4, 256) int16: for dy = y1 - y0 in -127..127 at index dy + 128, the pixel run
    of a dx=3 segment in column x0 + k is y0 + LO[k, i] .. y0 + HI[k, i] (ma_segment_runs). Index 0
    is a "no segment" entry whose run is empty for any y0 (LO > HI)."""
    dy = np.arange(-128, 128)
    lo, hi = ma_segment_runs(np.zeros_like(dy), dy)  # (256, 4)
    lo, hi = lo.T.astype(np.int16), hi.T.astype(np.int16)
    lo[:, 0], hi[:, 0] = 16000, -16000
    return lo, hi


_SEG_LO, _SEG_HI = _segment_offset_tables()


def _ma_column_runs(yma: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """MA pixels per image column as one vertical run.

    yma: int16 (m, W), y of |MA| per day (-1 = missing). Returns (lo, hi) int16 (m, 3W): the y-range
    (from the bottom) of the MA pixels in each column; hi < lo means none.

    Segment d (MA_d and MA_{d+1} both present) covers columns 3d+1..3d+4 (ma_segment_runs). Column
    3d+1 gets the start of segment d, the end of segment d-1 and, for d = W-1, the final MA pixel;
    all contain y(MA_d), so their union is one run. Columns 3d+2 and 3d+3 have one segment each.
    An absent segment contributes an empty run (lo = y0 + 16000 > hi = y0 - 16000), which leaves
    the min/max union with a present one unchanged.
    """
    m = yma.shape[0]
    lo = np.full((m, 3 * window), 16000, dtype=np.int16)
    hi = np.full((m, 3 * window), -16000, dtype=np.int16)
    y0, y1 = yma[:, :-1], yma[:, 1:]
    entry = np.where((y0 >= 0) & (y1 >= 0), y1 - y0 + 128, 0)  # (m, W-1) table index
    seg_lo = np.take(_SEG_LO, entry, axis=1) + y0  # (4, m, W-1): runs in columns 3d+1+k, k = 0..3
    seg_hi = np.take(_SEG_HI, entry, axis=1) + y0
    lo[:, 2:-1:3], hi[:, 2:-1:3] = seg_lo[1], seg_hi[1]  # columns 3d+2
    lo[:, 3::3], hi[:, 3::3] = seg_lo[2], seg_hi[2]  # columns 3d+3
    c_lo, c_hi = lo[:, 1::3], hi[:, 1::3]  # centre columns 3d+1 (views)
    c_lo[:, :-1], c_hi[:, :-1] = seg_lo[0], seg_hi[0]
    np.minimum(c_lo[:, 1:], seg_lo[3], out=c_lo[:, 1:])
    np.maximum(c_hi[:, 1:], seg_hi[3], out=c_hi[:, 1:])
    # The final MA pixel, set explicitly by the authors after the line loop.
    last = yma[:, -1]
    has_last = last >= 0
    np.minimum(c_lo[:, -1], np.where(has_last, last, 16000), out=c_lo[:, -1])
    np.maximum(c_hi[:, -1], np.where(has_last, last, -16000), out=c_hi[:, -1])
    return lo, hi
