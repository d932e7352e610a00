"""The vectorised renderer (pipeline/images/render.py).

- hand-computed 5-day images (exact pixel sets) for the variants the golden file lacks
  (no MA, no volume) and for each drawing rule;
- every rejection status, and bad-input errors;
- the building blocks against their authorities: pandas' rolling sum, PIL's line;
- the whole renderer against an independent slow reference (per-window loops written from the
  golden README section 2 text, pandas for the MA, PIL for the drawing) on random windows full of
  defects, for all four (ma, volume) variants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from pipeline.images.render import (
    IMAGE_SHAPES,
    REJECTION_REASONS,
    adjust_prices,
    layout,
    ma_segment_runs,
    render_windows,
    rolling_sum_like_pandas,
)

NAN = np.nan


# --------------------------------------------------------------------------------------------
# helpers for hand-computed pictures
# --------------------------------------------------------------------------------------------

def picture(height: int, width: int, lit: list[tuple[int, int]]) -> np.ndarray:
    """uint8 (height, width) image with 255 at the (row, col) pairs in ``lit``."""
    img = np.zeros((height, width), dtype=np.uint8)
    for r, c in lit:
        img[r, c] = 255
    return img


def block_rows(real: list[list[float]], window: int) -> np.ndarray:
    """(1, 2W, 6) input with the given real rows at the end and NaN padding in front."""
    out = np.full((1, 2 * window, 6), NAN)
    if real:
        out[0, 2 * window - len(real):] = np.asarray(real, dtype=float)
    return out


# Case A: five chart days; raw closes 1.0 and returns 0, so adjusted prices equal the raw ones.
# minp = 0.76 (day 1 low), maxp = 1.24 (day 1 high); with volume P = 25 and
# y(v) = round((v - 0.76) * 24 / 0.48) = round((v - 0.76) * 50):
#   0.76 -> 0, 0.8 -> 2, 0.9 -> 7, 0.96 -> 10, 1.0 -> 12, 1.04 -> 14, 1.1 -> 17, 1.2 -> 22, 1.24 -> 24
CASE_A_CHART = [
    # open  high  low   close vol    ret
    [0.90, 1.10, 0.80, 1.0, 600.0, 0.0],   # day 0: bar y 2..17, open y 7, close y 12, vol 6 px
    [1.20, 1.24, 0.76, 1.0, 300.0, 0.0],   # day 1: bar y 0..24, open y 22, close y 12, vol 3 px
    [1.00, NAN, 0.90, 1.0, NAN, 0.0],      # day 2: high missing -> no glyph; volume missing
    [NAN, 1.04, 0.96, 1.0, 0.0, 0.0],      # day 3: no open tick; volume 0 -> still 1 px
    [0.80, 0.90, 1.10, 1.0, 420.0, 0.0],   # day 4: high < low -> ticks only; vol 4.2 -> 4 px
]
# Five rows before the chart whose first close is missing: with an MA block this is status 2.
CASE_A_BEFORE = [[1.0, 1.0, 1.0, NAN, 100.0, 0.0]] + [[1.0, 1.0, 1.0, 1.0, 100.0, 0.0]] * 4


def case_a_expected() -> np.ndarray:
    lit = []
    lit += [(r, 1) for r in range(7, 23)] + [(17, 0), (17, 1), (12, 2)]     # day 0 (rows 24 - y)
    lit += [(r, 4) for r in range(0, 25)] + [(2, 3), (2, 4), (12, 5)]       # day 1
    lit += [(r, 10) for r in range(10, 15)] + [(12, 11)]                    # day 3
    lit += [(22, 12), (22, 13), (12, 14)]                                   # day 4: ticks only
    # volume rows 26..31 (row 25 is the gap): bars grow up from row 31
    lit += [(r, 1) for r in range(26, 32)] + [(r, 4) for r in range(29, 32)]
    lit += [(31, 10)] + [(r, 13) for r in range(28, 32)]
    return picture(32, 15, lit)


def test_case_a_no_ma_with_volume_exact_pixels():
    rows = block_rows(CASE_A_BEFORE + CASE_A_CHART, 5)
    images, status = render_windows(rows, np.array([10]), 5, ma=False, volume=True)
    assert status.tolist() == [-1]
    np.testing.assert_array_equal(images[0], case_a_expected())


def test_case_a_short_history_means_no_ma_block():
    # W <= n_hist < 2W: the block is the last W rows, whatever ma says.
    rows = block_rows(CASE_A_BEFORE[3:] + CASE_A_CHART, 5)
    images, status = render_windows(rows, np.array([7]), 5, ma=True)
    assert status.tolist() == [-1]
    np.testing.assert_array_equal(images[0], case_a_expected())


def test_case_a_with_ma_block_checks_the_first_row_close():
    rows = block_rows(CASE_A_BEFORE + CASE_A_CHART, 5)
    images, status = render_windows(rows, np.array([10]), 5, ma=True)
    assert status.tolist() == [2]
    assert not images.any()


# Case B: 10 rows, MA drawn. Closes (= adjusted closes, ret chosen to match, row 0's ret is junk
# and must be ignored): 1,1,1,1,1 | 1, 1.5, 1.5, 0.75, 0.75. s = Cadj[5] = 1.
# MA on the chart days = (rolling 5-sum)/5 = 5/5, 5.5/5, 6/5, 5.75/5, 5.5/5 = 1, 1.1, 1.2, 1.15, 1.1.
# minp = 0.6 (day 4 low), maxp = 2.15 (day 1 high). Without volume P = 32, so
# y(v) = round((v - 0.6) * 31 / 1.55) = round((v - 0.6) * 20):
#   0.6->0 0.7->2 0.75->3 0.8->4 0.85->5 0.9->6 1.0->8 1.1->10 1.15->11 1.2->12 1.4->16 1.45->17
#   1.5->18 1.6->20 2.15->31
CASE_B = [
    [1.0, 1.0, 1.0, 1.0, 10.0, 5.0],      # row 0: its ret (5.0) is never used
    [1.0, 1.0, 1.0, 1.0, 10.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 10.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 10.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 10.0, 0.0],
    [0.9, 1.2, 0.85, 1.0, 10.0, 0.0],     # day 0: bar y 5..12, open 6, close 8; MA 8
    [1.0, 2.15, 1.0, 1.5, 20.0, 0.5],     # day 1: bar y 8..31, open 8, close 18; MA 10
    [1.5, 1.6, 1.4, 1.5, 30.0, 0.0],      # day 2: bar y 16..20, open 18, close 18; MA 12
    [1.4, 1.45, 0.75, 0.75, 40.0, -0.5],  # day 3: bar y 3..17, open 16, close 3; MA 11
    [0.7, 0.8, 0.6, 0.75, 50.0, 0.0],     # day 4: bar y 0..4, open 2, close 3; MA 10
]


def case_b_glyphs(top: int) -> list[tuple[int, int]]:
    """(row, col) of the OHLC glyphs of case B; ``top`` = P - 1 is the row of y = 0."""
    def px(x, y):
        return (top - y, x)
    lit = []
    for d, (y_lo, y_hi, y_open, y_close) in enumerate(
            [(5, 12, 6, 8), (8, 31, 8, 18), (16, 20, 18, 18), (3, 17, 16, 3), (0, 4, 2, 3)]):
        lit += [px(3 * d + 1, y) for y in range(y_lo, y_hi + 1)]
        lit += [px(3 * d, y_open), px(3 * d + 1, y_open), px(3 * d + 2, y_close)]
    return lit


# MA y = 8, 10, 12, 11, 10 at x = 1, 4, 7, 10, 13. Bresenham, dx = 3:
#   (1,8)->(4,10):  n=2, j_k = floor(2k/3 + 1/2) = 0,1,1,2  -> (1,8) (2,9) (3,9) (4,10)
#   (4,10)->(7,12): same                                      -> (4,10) (5,11) (6,11) (7,12)
#   (7,12)->(10,11): n=1, j_k = floor(k/3 + 1/2) = 0,0,1,1  -> (7,12) (8,12) (9,11) (10,11)
#   (10,11)->(13,10): same                                    -> (10,11) (11,11) (12,10) (13,10)
#   plus the final pixel (13,10).
CASE_B_MA_XY = [(1, 8), (2, 9), (3, 9), (4, 10), (5, 11), (6, 11), (7, 12), (8, 12), (9, 11),
                (10, 11), (11, 11), (12, 10), (13, 10)]


def test_case_b_ma_without_volume_exact_pixels():
    images, status = render_windows(block_rows(CASE_B, 5), np.array([10]), 5, ma=True, volume=False)
    assert status.tolist() == [-1]
    lit = case_b_glyphs(31) + [(31 - y, x) for x, y in CASE_B_MA_XY]
    np.testing.assert_array_equal(images[0], picture(32, 15, lit))


def test_case_b_no_ma_no_volume_exact_pixels():
    # Same block without the MA: only the last 5 rows; the scale is unchanged here (MA inside).
    images, status = render_windows(block_rows(CASE_B, 5), np.array([10]), 5, ma=False, volume=False)
    assert status.tolist() == [-1]
    np.testing.assert_array_equal(images[0], picture(32, 15, case_b_glyphs(31)))


def test_flat_price_with_inexact_reciprocal_draws_a_degenerate_image():
    # p = 49: (1.0 / 49) * 49 = 1 - 2**-53, so O/H/L = 1 - ulp while C = MA = 1 exactly:
    # minp = 1 - ulp -> y = 0 (row 24), maxp = 1 -> y = 24 (row 0).
    p = 49.0
    assert (1.0 / p) * p != 1.0
    rows = block_rows([[p, p, p, p, 100.0, 0.0]] * 10, 5)
    images, status = render_windows(rows, np.array([10]), 5)
    assert status.tolist() == [-1]
    lit = []
    for d in range(5):
        lit += [(24, 3 * d), (24, 3 * d + 1), (0, 3 * d + 2)]   # bar+open at the bottom, close on top
        lit += [(r, 3 * d + 1) for r in range(26, 32)]           # equal volumes: full 6-px bars
    lit += [(0, x) for x in range(1, 14)]                        # flat MA on the top row
    np.testing.assert_array_equal(images[0], picture(32, 15, lit))


def test_flat_price_with_exact_reciprocal_is_rejected():
    rows = block_rows([[2.0, 2.0, 2.0, 2.0, 100.0, 0.0]] * 10, 5)
    images, status = render_windows(rows, np.array([10]), 5)
    assert status.tolist() == [5]
    assert not images.any()


def test_all_zero_volume_leaves_the_volume_area_blank():
    chart = [r[:4] + [0.0, r[5]] for r in CASE_A_CHART]
    images, status = render_windows(block_rows(chart, 5), np.array([5]), 5)
    assert status.tolist() == [-1]
    want = case_a_expected()
    want[25:] = 0
    np.testing.assert_array_equal(images[0], want)


# --------------------------------------------------------------------------------------------
# statuses and errors
# --------------------------------------------------------------------------------------------

def ok_rows(window: int, n: int) -> list[list[float]]:
    rng = np.random.default_rng(window + n)
    close = 10 * np.cumprod(1 + rng.normal(0, 0.02, n))
    ret = np.r_[0.0, close[1:] / close[:-1] - 1]
    return [[c * 0.99, c * 1.02, c * 0.97, c, 1e5 + i, r] for i, (c, r) in enumerate(zip(close, ret))]


@pytest.mark.parametrize("window", [5, 20, 60])
def test_statuses(window):
    W = window
    cases, n_hist, want = [], [], []

    def add(rows, n, code):
        cases.append(block_rows(rows, W)[0])
        n_hist.append(n)
        want.append(code)

    good = ok_rows(W, 2 * W)
    add(good, 2 * W, -1)
    add(good[-(W - 1):], W - 1, 1)                      # R1: fewer than W rows
    add([], 0, 1)                                       # no rows at all
    r = [list(x) for x in good]
    r[0][3] = 0.0
    add(r, 2 * W, 2)                                    # R2: zero first raw close
    r = [list(x) for x in good]
    r[0][3] = -0.0
    add(r, 2 * W, 2)
    r = [list(x) for x in good[W:]]
    r[0][3] = NAN
    add(r, W, 2)                                        # R2 on the first of the last W rows
    r = [list(x) for x in good]
    r[2][5] = -1.0
    add(r, 2 * W, 3)                                    # R3: Ret = -1 before the first chart day
    r = [list(x) for x in good]
    r[W][5] = NAN
    add(r, 2 * W, 3)                                    # R3: first chart day's close is NaN
    r = [list(x) for x in good]
    r[W + 1][5] = -1.0
    add(r, 2 * W, -1)                                   # Ret = -1 inside the chart: drawn, minp 0
    if W >= 20:
        # (1 + Ret) = 2**-52 on rows 1..20: s = 2**-1040 (subnormal, not 0), 1/s overflows to inf,
        # so the first chart close is inf * s = inf and round(., 3) != 1: R4.
        r = [list(x) for x in good]
        for i in range(1, 21):
            r[i][5] = -1.0 + 2.0 ** -52
        add(r, 2 * W, 4)
    r = [[3.0, 3.0, 3.0, 3.0, 10.0, 0.0]] * (2 * W)
    add(r, 2 * W, 5)                                    # R5: flat, (1/3)*3 == 1
    r = [list(x) for x in good]
    r[W + 2][3] = 0.0
    add(r, 2 * W, 5)                                    # raw close 0 in the chart: inf -> R5
    r = [list(x) for x in good]
    for i in range(W, 2 * W):
        r[i][1] = r[i][2] = NAN
    add(r, 2 * W, -1)                                   # no bars but closes and MA: drawn

    images, status = render_windows(np.stack(cases), np.array(n_hist), W)
    assert status.tolist() == want
    assert not images[status != -1].any()
    assert images[status == -1].any(axis=(1, 2)).all()
    assert set(np.unique(images).tolist()) <= {0, 255}


def test_rejection_reasons_and_shapes():
    assert REJECTION_REASONS[0] == "R0_no_record_on_date"
    assert sorted(REJECTION_REASONS) == [0, 1, 2, 3, 4, 5]
    assert IMAGE_SHAPES == {5: (32, 15), 20: (64, 60), 60: (96, 180)}
    assert layout(5) == (32, 15, 25, 6)
    assert layout(20) == (64, 60, 51, 12)
    assert layout(60) == (96, 180, 76, 19)
    assert layout(20, volume=False) == (64, 60, 64, 0)


def test_empty_batch():
    images, status = render_windows(np.empty((0, 40, 6)), np.empty(0, dtype=np.int64), 20)
    assert images.shape == (0, 64, 60) and images.dtype == np.uint8
    assert status.shape == (0,) and status.dtype == np.int8


@pytest.mark.parametrize("rows, n_hist, window, message", [
    (np.zeros((2, 10, 6)), np.array([10, 10]), 7, "window must be one of"),
    (np.zeros((2, 20, 6)), np.array([10, 10]), 5, r"rows must be an array of shape \(n, 10, 6\)"),
    (np.zeros((2, 10, 5)), np.array([10, 10]), 5, r"got \(2, 10, 5\)"),
    (np.zeros((10, 6)), np.array([10]), 5, "rows must be an array of shape"),
    (np.zeros((2, 10, 6), dtype=np.float32), np.array([10, 10]), 5, "rows must be float64"),
    (np.zeros((2, 10, 6)), np.array([10]), 5, r"n_hist must have shape \(2,\)"),
    (np.zeros((2, 10, 6)), np.array([10.0, 10.0]), 5, "n_hist must be an integer array"),
    (np.zeros((2, 10, 6)), np.array([10, 11]), 5, "window 1 has n_hist=11"),
    (np.zeros((2, 10, 6)), np.array([-1, 10]), 5, "window 0 has n_hist=-1"),
])
def test_bad_inputs_raise(rows, n_hist, window, message):
    with pytest.raises(ValueError, match=message):
        render_windows(rows, n_hist, window)


def test_inputs_are_not_modified():
    rows = block_rows(CASE_B, 5)
    before = rows.copy()
    render_windows(rows, np.array([10]), 5)
    np.testing.assert_array_equal(rows, before)


# --------------------------------------------------------------------------------------------
# building blocks against their authorities
# --------------------------------------------------------------------------------------------

def test_rolling_sum_matches_pandas_bit_for_bit():
    rng = np.random.default_rng(7)
    m, n = 300, 120
    vals = rng.lognormal(0, 1, (m, n)) * rng.choice([1e-6, 1.0, 1e6], (m, 1))
    vals[rng.random((m, n)) < 0.3] = 1.5  # repeated values
    runs = rng.random(m) < 0.3   # long runs of equal values trigger pandas' "all equal" shortcut
    vals[runs, 40:100] = vals[runs, 40:41]
    tiny = rng.random(m) < 0.2   # cancellation, where the Kahan terms matter
    vals[tiny] = 1.0 + rng.normal(0, 1e-15, (tiny.sum(), n))
    no_nan = vals.copy()
    vals[rng.random((m, n)) < 0.02] = NAN
    vals[:5, 50:] = NAN
    for data in (no_nan, vals):
        for window in (5, 20, 60):
            got = rolling_sum_like_pandas(data, window)
            want = np.stack([pd.Series(row).rolling(window).sum().to_numpy() for row in data])
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(rolling_sum_like_pandas(data, window, 7), want[:, -7:])
    # and the equal-value shortcut does differ from a plain running sum somewhere in this data
    plain = np.stack([np.convolve(r, np.ones(20), "valid") for r in no_nan])
    assert (plain != rolling_sum_like_pandas(no_nan, 20)[:, 19:]).any()


def test_adjust_prices_follows_the_authors_loop():
    rng = np.random.default_rng(3)
    m, n = 200, 40
    block = rng.lognormal(0, 0.5, (m, n, 6))
    block[..., 5] = rng.normal(0, 0.05, (m, n))
    block[rng.random((m, n, 6)) < 0.05] = NAN
    block[:3, 7, 5] = -1.0   # Cadj = 0 from there on
    block[3, 9, 5] = np.inf  # inf * 0 later -> exercises the literal loop
    block[3, 12, 5] = -1.0
    o, h, l, c = adjust_prices(block)
    o2, _, _, c2 = adjust_prices(block, first_row=20)
    with np.errstate(all="ignore"):  # the literal loop meets inf * 0 on purpose
        for j in range(m):
            b = block[j]
            c0 = abs(b[0, 3])
            want_c, want_o = [1.0], [abs(b[0, 0]) / c0]
            pre = 1.0
            for i in range(1, n):
                cadj = (1 + b[i, 5]) * pre
                want_c.append(cadj)
                want_o.append(cadj / abs(b[i, 3]) * abs(b[i, 0]))
                if not np.isnan(cadj):
                    pre = cadj
            np.testing.assert_array_equal(c[j], want_c)
            np.testing.assert_array_equal(o[j], want_o)
            np.testing.assert_array_equal(o2[j], want_o[20:])
            np.testing.assert_array_equal(c2[j], want_c)


def test_ma_segments_match_pil_line_for_every_slope():
    span = 96
    y0, y1 = np.meshgrid(np.arange(span), np.arange(span), indexing="ij")
    lo, hi = ma_segment_runs(y0.ravel(), y1.ravel())
    for i, (a, b) in enumerate(zip(y0.ravel(), y1.ravel())):
        img = Image.new("L", (6, span), 0)
        ImageDraw.Draw(img).line((1, int(a), 4, int(b)), fill=255, width=1)
        arr = np.asarray(img)
        for k in range(4):
            ys = np.flatnonzero(arr[:, 1 + k])
            assert ys.size and (ys[0], ys[-1]) == (lo[i, k], hi[i, k]), (a, b, k)
            assert ys.size == hi[i, k] - lo[i, k] + 1  # one contiguous run
        assert not arr[:, [0, 5]].any()


# --------------------------------------------------------------------------------------------
# against an independent slow reference on random windows
# --------------------------------------------------------------------------------------------

def reference_render(rows: np.ndarray, n_hist: int, window: int, ma: bool = True,
                     volume: bool = True) -> tuple[np.ndarray, int]:
    """One window, loop by loop, from the golden README section 2 (pandas MA, PIL drawing)."""
    W = window
    height, width = IMAGE_SHAPES[W]
    blank = np.zeros((height, width), dtype=np.uint8)
    if n_hist < W:
        return blank, 1
    use_ma = ma and n_hist >= 2 * W
    block = rows[-2 * W:] if use_ma else rows[-W:]
    opens, highs, lows, closes, vols, rets = (block[:, k].copy() for k in range(6))
    if closes[0] == 0 or np.isnan(closes[0]):
        return blank, 2
    # adjust_price
    c0 = abs(closes[0])
    adj = {"o": [abs(opens[0]) / c0], "h": [abs(highs[0]) / c0], "l": [abs(lows[0]) / c0],
           "c": [1.0]}
    pre = 1.0
    with np.errstate(all="ignore"):
        for i in range(1, len(block)):
            cadj = (1 + rets[i]) * pre
            adj["c"].append(cadj)
            for key, raw in (("o", opens), ("h", highs), ("l", lows)):
                adj[key].append(cadj / abs(closes[i]) * abs(raw[i]))
            if not np.isnan(cadj):
                pre = cadj
        adj = {k: np.array(v) for k, v in adj.items()}
        first = len(block) - W
        s = adj["c"][first]
        if s == 0 or np.isnan(s):
            return blank, 3
        for k in ("o", "h", "l", "c"):
            adj[k] = adj[k] * (1.0 / s)
        if use_ma:
            adj["ma"] = (pd.Series(adj["c"]).rolling(W).sum() / W).to_numpy()
        chart = {k: np.abs(v[first:]) for k, v in adj.items()}
        if np.around(chart["c"][0], decimals=3) != 1.0:
            return blank, 4
        every = pd.Series(np.concatenate(list(chart.values())))
        minp, maxp = every.min(), every.max()  # NaN-skipping
        # beyond the authors (who would raise): a non-finite scale is rejected as degenerate
        if maxp == minp or np.isnan(maxp) or np.isnan(minp) or np.isinf(maxp):
            return blank, 5
    vol_rows = int(height / 5) if volume else 0
    p_rows = height - vol_rows - 1 if volume else height

    def y(v):
        return int(np.around((v - minp) * ((p_rows - 1.0) / (maxp - minp))))

    price = Image.new("L", (width, p_rows), 0)
    draw = ImageDraw.Draw(price)
    px = price.load()
    if use_ma:
        m_ = chart["ma"]
        for d in range(W - 1):
            if not (np.isnan(m_[d]) or np.isnan(m_[d + 1])):
                draw.line((3 * d + 1, y(m_[d]), 3 * d + 4, y(m_[d + 1])), fill=255, width=1)
        if not np.isnan(m_[-1]):
            px[3 * W - 2, y(m_[-1])] = 255
    for d in range(W):
        o_, h_, l_, c_ = (chart[k][d] for k in ("o", "h", "l", "c"))
        if np.isnan(h_) or np.isnan(l_):
            continue
        for j in range(y(l_), y(h_) + 1):
            px[3 * d + 1, j] = 255
        if not np.isnan(o_):
            px[3 * d, y(o_)] = 255
            px[3 * d + 1, y(o_)] = 255
        if not np.isnan(c_):
            px[3 * d + 2, y(c_)] = 255
    if not volume:
        return np.asarray(price.transpose(Image.FLIP_TOP_BOTTOM)), -1
    vol_img = Image.new("L", (width, vol_rows), 0)
    vdraw = ImageDraw.Draw(vol_img)
    v = vols[-W:]
    vmax = np.nanmax(np.abs(v)) if not np.isnan(v).all() else NAN
    if not np.isnan(vmax) and vmax != 0:
        for d in range(W):
            if np.isnan(v[d]):
                continue
            h_d = int(np.around(abs(v[d]) * (1.0 * vol_rows / vmax)))
            vdraw.line([3 * d + 1, 0, 3 * d + 1, h_d - 1], fill=255)
    full = Image.new("L", (width, height), 0)
    full.paste(price, (0, vol_rows + 1))
    full.paste(vol_img, (0, 0))
    return np.asarray(full.transpose(Image.FLIP_TOP_BOTTOM)), -1


def random_windows(rng: np.random.Generator, n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Plausible windows with the defects of real data (and a few beyond)."""
    L = 2 * window
    ret = rng.standard_t(3, (n, L)) * 0.02
    ret[rng.random((n, L)) < 0.01] *= 10                       # huge moves
    close = np.exp(rng.normal(1, 2, (n, 1))) * np.cumprod(1 + ret, axis=1)
    split = rng.random(n) < 0.1                                # raw prices jump, Ret does not
    k = rng.integers(1, L, n)
    jump = np.where((np.arange(L)[None, :] < k[:, None]) & split[:, None], 2.0, 1.0)
    close_raw = close * jump
    opens = close_raw * (1 + rng.normal(0, 0.01, (n, L)))
    highs = np.maximum(opens, close_raw) * (1 + np.abs(rng.normal(0, 0.01, (n, L))))
    lows = np.minimum(opens, close_raw) * (1 - np.abs(rng.normal(0, 0.01, (n, L))))
    swap = rng.random((n, L)) < 0.03                            # high < low
    highs[swap], lows[swap] = lows[swap], highs[swap]
    vols = rng.lognormal(10, 1, (n, L)) / jump
    vols[rng.random((n, L)) < 0.03] *= 50                       # spikes
    vols[rng.random((n, L)) < 0.03] = 0.0                       # literal zeros: the 1-px quirk
    vols[rng.random(n) < 0.03] = 0.0                            # all-zero windows
    rows = np.stack([opens, highs, lows, close_raw, vols, ret], axis=2)
    flat = rng.random(n) < 0.08                                 # constant prices, Ret = 0
    for j in np.flatnonzero(flat):
        p = rng.choice([49.0, 2.0, 1.93673003, rng.uniform(0.5, 100)])
        start = rng.integers(0, L)
        rows[j, start:, :4] = p
        rows[j, start:, 5] = 0.0
    rows[rng.random((n, L, 6)) < min(0.02, 0.8 / L)] = NAN       # any cell missing
    rows[rng.random((n, L)) < 0.003, 5] = -1.0                  # wipe-outs
    n_hist = np.where(rng.random(n) < 0.7, L, rng.integers(0, L + 1, n))
    # one sure case of each early rejection: R1, R2 (first raw close missing), R3 (wiped out)
    n_hist[:3] = [window - 1, L, L]
    rows[1, 0, 3] = NAN
    rows[2, 1, 5] = -1.0
    for j in range(n):
        rows[j, :L - n_hist[j]] = NAN
    return rows, n_hist


@pytest.mark.parametrize("window, n", [(5, 250), (20, 120), (60, 40)])
def test_fast_path_agrees_with_reference_on_random_windows(window, n):
    rng = np.random.default_rng(window)
    rows, n_hist = random_windows(rng, n, window)
    seen = {}
    for ma in (True, False):
        for volume in (True, False):
            images, status = render_windows(rows, n_hist, window, ma=ma, volume=volume)
            for j in range(n):
                want_img, want_status = reference_render(rows[j], int(n_hist[j]), window, ma, volume)
                assert status[j] == want_status, (j, ma, volume)
                np.testing.assert_array_equal(images[j], want_img, err_msg=f"window {j} {ma=} {volume=}")
            seen[ma, volume] = status
    # the random set reaches the rules: images with and without MA, and rejections
    assert ((seen[True, True] == -1) & (n_hist == 2 * window)).sum() > n // 3
    assert ((seen[True, True] == -1) & (n_hist < 2 * window)).any()
    assert {1, 2, 3} <= set(seen[True, True].tolist())
