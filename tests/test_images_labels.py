"""Labels on a hand-made two-stock panel: every expected value computed by hand (METHOD 3)."""

import numpy as np
import pytest

from pipeline.images import labels, windows

# Calendar: d0 Fri 01-26, d1 Wed 01-31, d2 Fri 02-02, d3 Fri 02-09, d4 Fri 02-16, d5 Wed 02-28,
# d6 Fri 03-02, d7 Mon 03-05 (last day: its week and March are incomplete, so not period ends).
# Week ends: d0, d2, d3, d4, d6.  Month ends: d1, d5.  Quarter ends: none.
CAL = np.array(["2001-01-26", "2001-01-31", "2001-02-02", "2001-02-09", "2001-02-16",
                "2001-02-28", "2001-03-02", "2001-03-05"], dtype="datetime64[ns]")
A_RET = [0.0, 0.1, 0.2, -0.1, 0.05, 0.02, -0.03, 0.01]  # stock 5: every day
B_DAYS = [0, 1, 2, 4, 5, 6]  # stock 9: misses d3
B_RET = [0.0, 0.05, -0.02, 0.03, 0.04, 0.06]


def panel():
    sid = np.array([5] * 8 + [9] * 6, dtype=np.int32)
    dates = np.r_[CAL, CAL[B_DAYS]]
    ret = np.array(A_RET + B_RET)
    mktcap = np.arange(14, dtype=np.float64) * 10.0
    ids, offsets = windows.stock_offsets(sid)
    return ids, offsets, dates, ret, mktcap


def table(mode="strict"):
    ids, offsets, dates, ret, mktcap = panel()
    return labels.label_table(ids, offsets, windows.to_days(dates), ret, mktcap, CAL,
                              np.arange(14), mode)


@pytest.mark.parametrize("chunk", [2_000_000, 3])
def test_ewma_vol_exact_and_shifted_per_stock(monkeypatch, chunk):
    # chunk=3 splits the work into several chunks of whole stocks: same values
    monkeypatch.setattr(labels, "CHUNK_ROWS", chunk)
    _, offsets, _, ret, _ = panel()
    ev = labels.ewma_vol(ret, offsets)
    cl = labels.cumulative_log_returns(ret, offsets)
    np.testing.assert_allclose(cl, np.r_[np.cumsum(np.log1p(A_RET)), np.cumsum(np.log1p(B_RET))],
                               rtol=1e-15, atol=0)
    assert np.isnan(ev[0]) and np.isnan(ev[8])  # first record of each stock: no history
    assert ev[1] == pytest.approx(0.0)  # only r0^2 = 0 before record 1
    assert ev[2] == pytest.approx((0.01 + 0.95 * 0.0) / 1.95, rel=1e-13)
    assert ev[3] == pytest.approx((0.04 + 0.95 * 0.01 + 0.9025 * 0.0) / 2.8525, rel=1e-13)
    # stock 9 record 2 sees only its own 0.0^2 and 0.05^2, never stock 5's returns
    assert ev[10] == pytest.approx((0.0025 + 0.95 * 0.0) / 1.95, rel=1e-13)


def test_record_horizon_returns():
    t = table()
    assert t["ret_5d"].iloc[0] == pytest.approx(1.1 * 1.2 * 0.9 * 1.05 * 1.02 - 1, rel=1e-12)
    assert t["ret_5d"].iloc[2] == pytest.approx(0.9 * 1.05 * 1.02 * 0.97 * 1.01 - 1, rel=1e-12)
    assert np.isnan(t["ret_5d"].iloc[3])  # row 8 belongs to the other stock
    assert t["ret_5d"].iloc[8] == pytest.approx(1.05 * 0.98 * 1.03 * 1.04 * 1.06 - 1, rel=1e-12)
    assert t["ret_20d"].isna().all() and t["ret_60d"].isna().all()
    assert (t["label_20d"] == 2).all()


def test_period_returns_strict():
    t = table("strict")
    wk = t["ret_week"].to_numpy()
    # stock 5: week ends d0 d2 d3 d4 d6; d6 has no next week end in the calendar.
    assert wk[0] == pytest.approx(1.1 * 1.2 - 1, rel=1e-12)
    assert wk[2] == pytest.approx(0.9 - 1, rel=1e-12)
    assert wk[3] == pytest.approx(1.05 - 1, rel=1e-12)
    assert wk[4] == pytest.approx(1.02 * 0.97 - 1, rel=1e-12)
    assert np.isnan(wk[[1, 5, 6, 7]]).all()
    # stock 9 rows 8..13 = d0 d1 d2 d4 d5 d6: d2's next week end d3 is missing -> NaN (strict)
    assert wk[8] == pytest.approx(1.05 * 0.98 - 1, rel=1e-12)
    assert np.isnan(wk[10])
    assert wk[11] == pytest.approx(1.04 * 1.06 - 1, rel=1e-12)
    mo = t["ret_month"].to_numpy()
    assert mo[1] == pytest.approx(1.2 * 0.9 * 1.05 * 1.02 - 1, rel=1e-12)
    assert mo[9] == pytest.approx(0.98 * 1.03 * 1.04 - 1, rel=1e-12)
    assert np.isnan(np.delete(mo, [1, 9])).all()  # only month-end rows with a next month end
    assert t["ret_quarter"].isna().all()
    assert t["label_week"].tolist()[:5] == [1, 2, 0, 1, 0]
    assert t["label_week"].iloc[10] == 2


def test_period_returns_next_available():
    t = table("next_available")
    # stock 9 at d2 jumps to its next week-end record d4
    assert t["ret_week"].iloc[10] == pytest.approx(1.03 - 1, rel=1e-12)
    assert t["label_week"].iloc[10] == 1
    s = table("strict")
    keep = np.arange(14) != 10
    np.testing.assert_array_equal(t["ret_week"].to_numpy()[keep], s["ret_week"].to_numpy()[keep])


def test_table_columns_and_mktcap():
    t = table()
    from pipeline.images.store import LABEL_TABLE_COLUMNS

    assert list(t.columns) == LABEL_TABLE_COLUMNS
    assert t["stock_id"].dtype == np.int32 and t["label_5d"].dtype == np.int8
    assert t["stock_id"].tolist() == [5] * 8 + [9] * 6
    assert t["mktcap"].tolist() == list(np.arange(14) * 10.0)
    assert t["date"].iloc[11] == np.datetime64("2001-02-16")


def test_bad_mode():
    with pytest.raises(ValueError, match="period_ret_mode"):
        table("loose")
