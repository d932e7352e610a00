"""Per-image labels (docs/method.md 3): future returns, EWMA volatility, market cap, up/down codes.

All functions take the panel as flat arrays in (stock_id, date) order with per-stock ``offsets``
(see :mod:`pipeline.images.windows`) and are computed over each stock's **whole** history, so a
return that crosses a year end, or an EWMA that starts decades earlier, is exact whatever year an
image belongs to. Image rows are panel row indices of the image dates.
"""

from __future__ import annotations

import typing
import numpy as np
import pandas as pd

from pipeline.config import FREQUENCIES, PeriodRetMode
from pipeline.images import windows
from pipeline.images.store import LABEL_TABLE_COLUMNS, RETURN_SUFFIXES, labels_from_returns

EWMA_ALPHA = 0.05
RECORD_HORIZONS = (5, 20, 60)
PERIOD_MODES: tuple[str, ...] = typing.get_args(PeriodRetMode)


def row_stock_index(offsets: np.ndarray) -> np.ndarray:
    """Stock index of every panel row, int64 (N,)."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


# Rows per chunk of whole stocks for the grouped pandas kernels: bounds their temporaries.
CHUNK_ROWS = 2_000_000


def _stock_chunks(offsets: np.ndarray, rows: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    """Consecutive (first stock, end stock) ranges of about ``rows`` rows each."""
    cuts = np.searchsorted(offsets, np.arange(rows, offsets[-1], rows), side="right") - 1
    bounds = np.unique(np.r_[0, cuts, len(offsets) - 1])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def cumulative_log_returns(ret: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``cl``: per-stock cumulative sum of log(1+ret), float64 (N,) (METHOD 3.1).

    Summed per stock (pandas' grouped cumsum), so precision does not depend on the other stocks.
    """
    out = np.log1p(np.asarray(ret, dtype=np.float64))
    for a, b in _stock_chunks(offsets):  # chunks of whole stocks, not a loop per stock
        lo, hi = offsets[a], offsets[b]
        grp = row_stock_index(offsets[a:b + 1] - lo)
        out[lo:hi] = pd.Series(out[lo:hi]).groupby(grp, sort=False).cumsum().to_numpy()
    return out


def ewma_vol(ret: np.ndarray, offsets: np.ndarray, alpha: float = EWMA_ALPHA) -> np.ndarray:
    """EWMA variance of daily returns known before each record, float64 (N,) (METHOD 3.3).

    ``ewma_vol[t] = sum_i (1-alpha)^i r[t-1-i]^2 / sum_i (1-alpha)^i`` over the stock's earlier
    records (pandas ``ewm(alpha, adjust=True).mean()`` of r^2, shifted one record); NaN on each
    stock's first record. pandas' kernel keeps an all-zero history exactly 0 (the EWMA_vol == 0
    filter of METHOD 3.2 depends on it).
    """
    r2 = np.square(np.asarray(ret, dtype=np.float64))
    out = np.empty_like(r2)
    if len(r2) == 0:
        return out
    for a, b in _stock_chunks(offsets):
        lo, hi = offsets[a], offsets[b]
        grp = row_stock_index(offsets[a:b + 1] - lo)
        # Grouped ewm runs in compiled code; rows are grouped already, so the order is kept.
        m = (pd.Series(r2[lo:hi]).groupby(grp, sort=False).ewm(alpha=alpha, adjust=True).mean()
             .to_numpy())
        out[lo + 1:hi] = m[:-1]
    out[offsets[:-1][np.diff(offsets) > 0]] = np.nan
    return out


def forward_returns(cl: np.ndarray, rows: np.ndarray, stock_end: np.ndarray, k: int) -> np.ndarray:
    """``exp(cl[t+k] - cl[t]) - 1`` for image rows t, k records ahead; NaN past the stock's end.

    rows, stock_end: int64 (n,), stock_end = one past the stock's last panel row.
    """
    ahead = rows + k
    ok = ahead < stock_end
    out = np.full(len(rows), np.nan)
    out[ok] = np.exp(cl[ahead[ok]] - cl[rows[ok]]) - 1.0
    return out


def next_period_rows(cands: windows.Candidates, mode: str) -> np.ndarray:
    """For each candidate, the panel row ending its next-period return, or -1, int64 (n,).

    cands: every (stock, period end) pair of the full calendar (from find_candidates).
    strict: the stock's record on the immediately following period end of the calendar;
    next_available: the stock's next period-end record, however far (the authors' code).
    """
    if mode not in PERIOD_MODES:
        raise ValueError(f"period_ret_mode {mode!r}: choose one of {list(PERIOD_MODES)}")
    n = len(cands)
    out = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return out
    same = cands.stock_index[1:] == cands.stock_index[:-1]
    if mode == "strict":
        # Pairs of a stock enumerate consecutive period ends, so pair p+1 is the next one.
        out[:-1] = np.where(same, cands.row[1:], -1)
    else:
        # Index of the next found pair at or after each position (suffix minimum).
        idx = np.where(cands.row >= 0, np.arange(n), n)
        nxt_found = np.minimum.accumulate(idx[::-1])[::-1]
        after = np.r_[nxt_found[1:], n]
        valid = after < n
        after_c = np.minimum(after, n - 1)
        valid &= cands.stock_index[after_c] == cands.stock_index
        out = np.where(valid, cands.row[after_c], -1)
    out[cands.row < 0] = -1
    return out


def period_returns(cl: np.ndarray, days: np.ndarray, offsets: np.ndarray, calendar: np.ndarray,
                   rows: np.ndarray, freq: str, mode: str,
                   keys: tuple[np.ndarray, int, int] | None = None) -> np.ndarray:
    """Return from each image row's date to the next ``freq`` period end, float64 (n,).

    Defined only where the image date is itself a ``freq`` period end of the calendar (as in the
    authors' code, which computes Ret_week/month/quarter on period-end rows only); NaN otherwise,
    when there is no next period end, or (strict) when the stock lacks a record on it.
    calendar: datetime64 (c,) all panel trading days; keys: windows.row_keys(days, offsets).
    """
    pe = windows.to_days(windows.period_ends(calendar, freq))
    cands = windows.find_candidates(days, offsets, pe, keys)
    nxt = next_period_rows(cands, mode)
    have = cands.row >= 0
    c_rows, c_next = cands.row[have], nxt[have]  # increasing in row (panel order)
    out = np.full(len(rows), np.nan)
    if len(c_rows) == 0:
        return out
    pos = np.minimum(np.searchsorted(c_rows, rows), len(c_rows) - 1)
    hit = (c_rows[pos] == rows) & (c_next[pos] >= 0)
    out[hit] = np.exp(cl[c_next[pos[hit]]] - cl[rows[hit]]) - 1.0
    return out


def label_table(stock_ids: np.ndarray, offsets: np.ndarray, days: np.ndarray, ret: np.ndarray,
                mktcap: np.ndarray, calendar: np.ndarray, rows: np.ndarray,
                mode: str = "strict", keys: tuple[np.ndarray, int, int] | None = None
                ) -> pd.DataFrame:
    """The label table (store.LABEL_TABLE_COLUMNS) of the images at panel ``rows``.

    stock_ids: (k,) unique ids; offsets (k+1,); days int64 (N,) (windows.to_days of the dates),
    ret, mktcap float64 (N,) in panel order; calendar datetime64 all panel trading days;
    rows int64 (n,) image rows in panel order; keys: windows.row_keys(days, offsets) when the
    caller has it. Returns n rows in the order of ``rows``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    days = np.asarray(days, dtype=np.int64)
    stock = np.searchsorted(offsets, rows, side="right") - 1
    stock_end = offsets[stock + 1]
    cl = cumulative_log_returns(ret, offsets)
    ev = ewma_vol(ret, offsets)
    out: dict[str, np.ndarray] = {
        "stock_id": np.asarray(stock_ids)[stock].astype(np.int32),
        "date": windows.days_to_ns(days[rows]),
        "mktcap": np.asarray(mktcap, dtype=np.float64)[rows],
        "ewma_vol": ev[rows],
    }
    for k in RECORD_HORIZONS:
        out[f"ret_{k}d"] = forward_returns(cl, rows, stock_end, k)
    keys = keys if keys is not None else windows.row_keys(days, offsets)
    for f in FREQUENCIES:
        out[f"ret_{f}"] = period_returns(cl, days, offsets, calendar, rows, f, mode, keys)
    for s in RETURN_SUFFIXES:
        out[f"label_{s}"] = labels_from_returns(out[f"ret_{s}"])
    return pd.DataFrame(out)[LABEL_TABLE_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Regression targets (METHOD 3.6) and delayed holding periods (METHOD 7.1)


def regression_target(ret: np.ndarray, ewma_vol: np.ndarray, horizon: int, target: str) -> np.ndarray:
    """The value a regression run learns for each image, float64 (n,) (METHOD 3.6).

    ret: the label's return (``ret_<suffix>``, decimal; NaN = missing); ewma_vol: the image's
    ex-ante EWMA variance of daily returns (METHOD 3.3); horizon: the label's nominal length in
    records (5, 20, 60). ``return``: ret itself. ``vol_adjusted_return``: ret / sqrt(horizon *
    ewma_vol), the return in units of its ex-ante standard deviation over the horizon (daily
    variance times the number of records, i.e. independent daily returns); NaN where the variance
    is missing or not positive. NaN marks an image without a target (dropped from training).
    """
    r = np.asarray(ret, dtype=np.float64)
    if target == "return":
        return r.copy()
    if target == "vol_adjusted_return":
        v = np.asarray(ewma_vol, dtype=np.float64)
        ok = np.isfinite(v) & (v > 0)
        out = np.full(r.shape, np.nan)
        out[ok] = r[ok] / np.sqrt(horizon * v[ok])
        return out
    raise ValueError(f"regression target {target!r}: choose 'return' or 'vol_adjusted_return'")


def label_end_rows(days: np.ndarray, offsets: np.ndarray, calendar: np.ndarray, rows: np.ndarray,
                   suffix: str, mode: str = "strict",
                   keys: tuple[np.ndarray, int, int] | None = None) -> np.ndarray:
    """Panel row on whose close each image's ``ret_<suffix>`` label ends, int64 (n,); -1 = none.

    The same rule as :func:`forward_returns` ("5d"/"20d"/"60d": k records ahead, inside the stock's
    records) and :func:`period_returns` ("week"/"month"/"quarter": the next period end, ``mode``
    strict or next_available, defined on period-end image rows only). days int64 (N,), offsets
    (k+1,), calendar datetime64 every panel trading day, rows int64 (n,) image rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), -1, dtype=np.int64)
    if suffix in FREQUENCIES:
        pe = windows.to_days(windows.period_ends(calendar, suffix))
        cands = windows.find_candidates(days, offsets, pe, keys)
        nxt = next_period_rows(cands, mode)
        have = cands.row >= 0
        c_rows, c_next = cands.row[have], nxt[have]
        if len(c_rows) == 0:
            return out
        pos = np.minimum(np.searchsorted(c_rows, rows), len(c_rows) - 1)
        hit = (c_rows[pos] == rows) & (c_next[pos] >= 0)
        out[hit] = c_next[pos[hit]]
        return out
    k = int(suffix.removesuffix("d"))
    stock_end = offsets[np.searchsorted(offsets, rows, side="right")]
    ok = rows + k < stock_end
    out[ok] = rows[ok] + k
    return out


def delayed_returns(cl: np.ndarray, rows: np.ndarray, end_rows: np.ndarray, stock_end: np.ndarray,
                    delay: int) -> np.ndarray:
    """The label's holding period moved ``delay`` records later, float64 (n,) (METHOD 7.1).

    ``exp(cl[end + d] - cl[row + d]) - 1``: bought at the close ``d`` of the stock's records after
    the image date, sold ``d`` records after the label's own end (the same number of records
    held). NaN where the label has no end (``end_rows`` -1) or ``end + d`` passes the stock's last
    record (the panel's end or the stock's delisting). With d = 0 it is the label return itself,
    computed by the same expression. cl: :func:`cumulative_log_returns`; rows, end_rows,
    stock_end int64 (n,) (stock_end = one past the stock's last panel row).
    """
    if delay < 0:
        raise ValueError(f"delay {delay}: must be >= 0 records")
    start = rows + delay
    end = end_rows + delay
    ok = (end_rows >= 0) & (end < stock_end)
    out = np.full(len(rows), np.nan)
    out[ok] = np.exp(cl[end[ok]] - cl[start[ok]]) - 1.0
    return out


def delayed_label_returns(offsets: np.ndarray, days: np.ndarray, ret: np.ndarray,
                          calendar: np.ndarray, rows: np.ndarray, suffix: str,
                          delays: list[int] | tuple[int, ...], mode: str = "strict"
                          ) -> dict[int, np.ndarray]:
    """{d: ret_<suffix> of the images at panel ``rows`` held from d records later}, each float64
    (n,), from the panel's flat arrays as :func:`label_table` takes them (cumulative log returns
    over each stock's whole history, so d = 0 reproduces the stored label bit for bit)."""
    rows = np.asarray(rows, dtype=np.int64)
    days = np.asarray(days, dtype=np.int64)
    cl = cumulative_log_returns(ret, offsets)
    stock_end = offsets[np.searchsorted(offsets, rows, side="right")]
    ends = label_end_rows(days, offsets, calendar, rows, suffix, mode)
    return {int(d): delayed_returns(cl, rows, ends, stock_end, int(d)) for d in delays}
