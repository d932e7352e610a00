"""Period ends, candidates (R0) and block gathering on hand-made calendars (METHOD 2.7, 2.9)."""

import numpy as np
import pytest

from pipeline.images import windows


def D(*s):
    return np.array(s, dtype="datetime64[D]").astype("datetime64[ns]")


def days(*s):
    return np.array(s, dtype="datetime64[D]").astype(np.int64)


def test_to_days_units_and_time_of_day():
    d = D("1969-12-31", "1970-01-01", "2019-12-31")
    assert windows.to_days(d).tolist() == [-1, 0, 18261]
    assert windows.to_days(d.astype("datetime64[us]")).tolist() == [-1, 0, 18261]
    with pytest.raises(ValueError, match="time of day"):
        windows.to_days(np.array(["2001-01-02T10:00"], dtype="datetime64[ns]"))


def test_week_ends_are_last_trading_day_mon_to_sun():
    # Sat 2001-01-06 trades (a weekend row) -> it ends that week; Fri 2001-01-12 is a holiday
    # -> Thu 2001-01-11 ends the next week; the last week (Mon 01-15 .. Sun 01-21) is complete
    # only because the calendar reaches Sunday 01-21.
    cal = D("2001-01-02", "2001-01-05", "2001-01-06", "2001-01-08", "2001-01-11",
            "2001-01-15", "2001-01-19", "2001-01-21")
    assert windows.period_ends(cal, "week").tolist() == D(
        "2001-01-06", "2001-01-11", "2001-01-21").tolist()


def test_incomplete_last_period_is_dropped():
    cal = D("2019-12-20", "2019-12-27", "2019-12-30", "2019-12-31")
    # Week of Mon 12-30 runs to Sun 2020-01-05: not complete; December is complete.
    assert windows.period_ends(cal, "week").tolist() == D("2019-12-20", "2019-12-27").tolist()
    assert windows.period_ends(cal, "month").tolist() == D("2019-12-31").tolist()
    cal2 = D("2019-11-29", "2019-12-30")
    assert windows.period_ends(cal2, "month").tolist() == D("2019-11-29").tolist()


def test_month_and_quarter_ends_unsorted_with_duplicates():
    cal = D("2001-03-30", "2001-01-31", "2001-02-27", "2001-01-30", "2001-02-27", "2001-03-29",
            "2001-04-02", "2001-06-29", "2001-06-30")
    # April's only trading day is 04-02, so it ends April.
    assert windows.period_ends(cal, "month").tolist() == D(
        "2001-01-31", "2001-02-27", "2001-03-30", "2001-04-02", "2001-06-30").tolist()
    assert windows.period_ends(cal, "quarter").tolist() == D("2001-03-30", "2001-06-30").tolist()
    with pytest.raises(ValueError, match="frequency"):
        windows.period_ends(cal, "year")


def test_find_candidates_listing_span_and_r0():
    # stock 0: days 1..6; stock 1: days 3,5 (listed 3..5, misses 4); stock 2: day 9 only.
    d = np.array([1, 2, 3, 4, 5, 6, 3, 5, 9], dtype=np.int64)
    sid = np.array([7, 7, 7, 7, 7, 7, 8, 8, 9])
    ids, offsets = windows.stock_offsets(sid)
    assert ids.tolist() == [7, 8, 9] and offsets.tolist() == [0, 6, 8, 9]
    pe = np.array([2, 4, 6, 8], dtype=np.int64)
    c = windows.find_candidates(d, offsets, pe)
    # stock 0 listed at pe 2,4,6 (rows 1,3,5); stock 1 listed at 4 only -> R0; stock 2 at none.
    assert c.stock_index.tolist() == [0, 0, 0, 1]
    assert c.pe_index.tolist() == [0, 1, 2, 1]
    assert c.row.tolist() == [1, 3, 5, -1]


def test_gather_blocks_pads_front_with_nan():
    w = 5
    values = np.arange(13 * 6, dtype=np.float64).reshape(13, 6)  # stock A rows 0..2, B rows 3..12
    ends = np.array([2, 12, 9])
    starts = np.array([0, 3, 3])
    n_hist = windows.history_lengths(ends, starts, w)
    assert n_hist.tolist() == [3, 10, 7]
    b = windows.gather_blocks(values, ends, n_hist, w)
    assert b.shape == (3, 10, 6)
    assert np.isnan(b[0, :7]).all() and (b[0, 7:] == values[0:3]).all()
    assert (b[1] == values[3:13]).all()
    assert np.isnan(b[2, :3]).all() and (b[2, 3:] == values[3:10]).all()


def test_ranges_concatenates_row_ranges():
    from pipeline.images.windows import ranges

    lo, hi = np.array([5, 0, 9, 3]), np.array([8, 0, 11, 4])
    assert ranges(lo, hi).tolist() == [5, 6, 7, 9, 10, 3]  # empty ranges contribute nothing
    assert ranges(np.array([2]), np.array([2])).tolist() == []
    assert ranges(np.array([0, 1]), np.array([0, 3])).tolist() == [1, 2]
