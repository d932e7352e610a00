"""Sampling windows for the chart images (docs/method.md 2.7, 2.9): period ends, candidates, blocks.

Everything here works on a panel held as flat, row-aligned numpy arrays sorted by
``(stock_id, date)`` (the canonical panel order), with per-stock row ranges given by *offsets*.
Nothing loops over stocks or dates in Python: candidates are enumerated with ``np.repeat`` and
located with one ``np.searchsorted`` on a composite (stock, day) key; blocks are gathered with
one fancy index.

Conventions:
    dates      datetime64[ns] at midnight (one trading day per value)
    days       int64 days since 1970-01-01 (``dates.astype("datetime64[D]")``)
    offsets    int64 (n_stocks + 1,): rows of stock k are ``offsets[k]:offsets[k+1]``
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import FREQUENCIES

# Columns handed to the renderer, in this order (ARCHITECTURE / render.render_windows contract).
RENDER_COLUMNS = ["open", "high", "low", "close", "volume", "ret"]
R0_CODE = 0  # no valid-return record on the image date (assigned here, not by the renderer)
# Fewer than W bars of history: render_windows rejects such a window with this code, and the image
# stage's plan counts it itself without drawing it (pipeline.images.build.plan_image_set).
R1_CODE = 1


def to_days(dates: np.ndarray) -> np.ndarray:
    """datetime64 (any unit) -> int64 days since the epoch; refuses values with a time of day."""
    d = np.asarray(dates)
    if not np.issubdtype(d.dtype, np.datetime64):
        raise TypeError(f"expected datetime64 dates, got {d.dtype}")
    unit, count = np.datetime_data(d.dtype)
    per_day = {"D": 1, "h": 24, "m": 1440, "s": 86_400, "ms": 86_400_000,
               "us": 86_400_000_000, "ns": 86_400_000_000_000}.get(unit)
    if per_day is None or count != 1:
        return d.astype("datetime64[D]").astype(np.int64)
    v = d.view(np.int64)
    if per_day == 1:
        return v.copy()
    days, rem = np.divmod(v, per_day)  # floor division: right for dates before 1970 too
    if len(v) and rem.any():
        i = int(np.flatnonzero(rem)[0])
        raise ValueError(f"date {d[i]} at row {i} has a time of day; panel dates must be days")
    return days


def days_to_ns(days: np.ndarray) -> np.ndarray:
    """int64 days since the epoch -> datetime64[ns]."""
    return (np.asarray(days, dtype=np.int64) * 86_400_000_000_000).view("datetime64[ns]")


def period_keys(days: np.ndarray, freq: str) -> np.ndarray:
    """Calendar period of each day as an int64 key, increasing in time.

    week: Monday-to-Sunday weeks (key = the Monday's day number); month: year*12+month-1;
    quarter: year*4+quarter-1.
    """
    days = np.asarray(days, dtype=np.int64)
    if freq == "week":
        # 1970-01-01 was a Thursday: weekday (Mon=0) = (days + 3) % 7.
        return days - (days + 3) % 7
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    if freq == "month":
        return months
    if freq == "quarter":
        return months // 3
    raise ValueError(f"frequency {freq!r}: choose one of {FREQUENCIES}")


def _period_last_calendar_day(key: int, freq: str) -> int:
    """Last calendar day (int64 days) of the period with this key."""
    if freq == "week":
        return int(key) + 6
    months = int(key) if freq == "month" else int(key) * 3 + 2
    nxt = np.datetime64(months + 1, "M").astype("datetime64[D]").astype(np.int64)
    return int(nxt) - 1


def period_ends(calendar: np.ndarray, freq: str, complete_only: bool = True) -> np.ndarray:
    """Period-end trading days of a calendar (METHOD 2.9): the one definition, for the images,
    the labels, the Bayes bound and the benchmark strategies' rebalance calendar.

    calendar: datetime64 (n,) every trading day of the panel (any order, duplicates allowed).
    Returns datetime64[ns] (m,) sorted: the last calendar date of each Mon-Sun week / month /
    quarter. With ``complete_only`` (images and labels) the final period is dropped when the
    calendar stops before that period's last calendar day: its last trading day is then not known
    to be the period end (e.g. a panel ending on Tuesday 2019-12-31 has no complete last week).
    This is conservative when a panel ends on a Friday; the dropped date would have no
    next-period return anyway. ``complete_only=False`` keeps it (a rebalance calendar that must
    cover every date a signal is formed on).
    """
    days = np.unique(to_days(calendar))
    if len(days) == 0:
        return np.array([], dtype="datetime64[ns]")
    keys = period_keys(days, freq)
    last_of_group = np.r_[keys[1:] != keys[:-1], True]
    ends = days[last_of_group]
    if complete_only and days[-1] < _period_last_calendar_day(keys[-1], freq):
        ends = ends[:-1]
    return ends.astype("datetime64[D]").astype("datetime64[ns]")


def stock_offsets(stock_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique stock ids (k,), offsets int64 (k+1,)) of a stock-sorted id array."""
    sid = np.asarray(stock_id)
    if len(sid) == 0:
        return sid[:0], np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    return sid[starts], np.r_[starts, len(sid)].astype(np.int64)


def composite_keys(stock_index: np.ndarray, days: np.ndarray, day0: int, span: int) -> np.ndarray:
    """Strictly increasing int64 key of (stock index, day) for panel-ordered rows."""
    return stock_index.astype(np.int64) * span + (days - day0)


def ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(lo[i], hi[i])`` over i (each hi >= lo), int64 (sum(hi - lo),):
    the rows of a list of row ranges, built without a loop over the ranges."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    n = hi - lo
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    step = np.ones(total, dtype=np.int64)
    nz = n > 0
    # Each range starts at its lo: the step from the previous range's last row is
    # lo - (hi_prev - 1).
    step[(np.cumsum(n) - n)[nz]] = lo[nz] - np.r_[0, hi[nz][:-1] - 1]
    return np.cumsum(step)


@dataclass
class Candidates:
    """Every (stock, period end) at which the stock is listed, in (stock, date) order.

    Attributes (all length n):
        stock_index  int64  index into the unique stock array
        pe_index     int64  index into the period-end array
        row          int64  panel row of the stock's record on that date, -1 if it has none (R0)
    """

    stock_index: np.ndarray
    pe_index: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def row_keys(days: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(composite key of every panel row, day0, span): reusable by :func:`find_candidates`."""
    day0 = int(days.min()) if len(days) else 0
    span = (int(days.max()) - day0 + 1) if len(days) else 1
    row_stock = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    return composite_keys(row_stock, days, day0, span), day0, span


def find_candidates(days: np.ndarray, offsets: np.ndarray, pe_days: np.ndarray,
                    keys: tuple[np.ndarray, int, int] | None = None) -> Candidates:
    """All (stock, period end) pairs with the period end inside the stock's listing span.

    days: int64 (N,) panel days in (stock, date) order; offsets: (k+1,) stock row ranges;
    pe_days: int64 (m,) sorted period-end days. A stock is listed from its first to its last
    record (inclusive); on a listed period end without a record the pair gets row -1 (R0).
    keys: :func:`row_keys` of (days, offsets), when already computed.
    """
    k = len(offsets) - 1
    if k == 0 or len(pe_days) == 0:
        e = np.zeros(0, dtype=np.int64)
        return Candidates(e, e.copy(), e.copy())
    first = days[offsets[:-1]]
    last = days[offsets[1:] - 1]
    lo = np.searchsorted(pe_days, first, side="left")
    hi = np.searchsorted(pe_days, last, side="right")
    count = np.maximum(hi - lo, 0)
    stock_index = np.repeat(np.arange(k, dtype=np.int64), count)
    # Position within each stock's run of pairs, added to its first period-end index.
    run_start = np.repeat(np.cumsum(count) - count, count)
    pe_index = np.repeat(lo, count) + (np.arange(len(stock_index)) - run_start)
    # Every queried day lies inside its stock's [first, last] span, so inside the keys' range.
    rk, day0, span = keys if keys is not None else row_keys(days, offsets)
    query = composite_keys(stock_index, pe_days[pe_index], day0, span)
    pos_c = np.minimum(np.searchsorted(rk, query), len(rk) - 1)
    found = rk[pos_c] == query
    row = np.where(found, pos_c, -1).astype(np.int64)
    return Candidates(stock_index, pe_index.astype(np.int64), row)


def history_lengths(rows: np.ndarray, stock_start: np.ndarray, window: int) -> np.ndarray:
    """n_hist: records available up to and including ``rows`` (capped at 2W), int64 (n,).

    rows: panel rows of the image dates; stock_start: first panel row of each one's stock.
    """
    return np.minimum(rows - stock_start + 1, 2 * window).astype(np.int64)


def gather_blocks(values: np.ndarray, end_rows: np.ndarray, n_hist: np.ndarray,
                  window: int) -> np.ndarray:
    """Blocks of the last 2W records ending at each image row, front-padded with NaN rows.

    values: float64 (N, 6) panel columns RENDER_COLUMNS in panel order;
    end_rows: int64 (n,) row of each image date; n_hist: int (n,) real rows in each block (1..2W),
    which must all belong to the image's stock (the caller guarantees it).
    Returns float64 (n, 2W, 6), oldest row first; rows ``[: 2W - n_hist]`` are NaN.
    """
    two_w = 2 * window
    n = len(end_rows)
    if n == 0:
        return np.zeros((0, two_w, values.shape[1]), dtype=np.float64)
    rel = np.arange(two_w, dtype=np.int64) - (two_w - 1)  # -(2W-1) .. 0
    idx = end_rows[:, None] + rel[None, :]
    pad = np.arange(two_w)[None, :] < (two_w - n_hist)[:, None]
    block = values[np.where(pad, 0, idx)]
    block[pad] = np.nan
    return block
