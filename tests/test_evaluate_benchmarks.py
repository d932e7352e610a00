"""Benchmark signals (MOM, STR, WSTR, TREND) on tiny panels with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.benchmarks import (benchmark_signals, past_return_signals, period_ends,
                                          trend_signal)


def _price_panel(n_by_stock: dict[int, int]) -> pd.DataFrame:
    """Stock s has n records with close P_i = 100 + i; ret_i = P_i / P_{i-1} - 1 (ret_0 = 0)."""
    parts = []
    for sid, n in n_by_stock.items():
        p = 100.0 + np.arange(n)
        ret = np.concatenate([[0.0], p[1:] / p[:-1] - 1])
        parts.append(pd.DataFrame({"stock_id": np.int32(sid),
                                   "date": pd.bdate_range("2000-01-03", periods=n),
                                   "close": p, "ret": ret}))
    return pd.concat(parts, ignore_index=True)


def test_str_wstr_mom_by_hand():
    panel = _price_panel({1: 30, 2: 300})
    rows = np.array([20, 25, 30 + 10, 30 + 251, 30 + 252, 30 + 280])
    s = past_return_signals(panel, rows)
    # stock 1, i = 20: STR needs 21 earlier records -> NaN; WSTR = -(P20/P15 - 1) = -5/115.
    assert np.isnan(s["STR"].iat[0])
    assert s["WSTR"].iat[0] == pytest.approx(-5 / 115, rel=1e-12)
    # stock 1, i = 25: STR = -(P25/P4 - 1) = -(125/104 - 1) = -21/104; WSTR = -(125/120 - 1).
    assert s["STR"].iat[1] == pytest.approx(-21 / 104, rel=1e-12)
    assert s["WSTR"].iat[1] == pytest.approx(-1 / 24, rel=1e-12)
    # stock 2, i = 10: no leakage from stock 1's records -> NaN STR, MOM.
    assert np.isnan(s["STR"].iat[2]) and np.isnan(s["MOM"].iat[2])
    # MOM = P_{i-21} / P_{i-252} - 1: needs 252 earlier records (i = 251 -> NaN);
    # i = 252: P231/P0 - 1 = 331/100 - 1 = 2.31; i = 280: P259/P28 - 1 = 359/128 - 1 = 231/128.
    assert np.isnan(s["MOM"].iat[3])
    assert s["MOM"].iat[4] == pytest.approx(2.31, rel=1e-12)
    assert s["MOM"].iat[5] == pytest.approx(231 / 128, rel=1e-12)
    assert s["stock_id"].tolist() == [1, 1, 2, 2, 2, 2]


def test_benchmark_signals_align_and_refuse_unknown_rows():
    panel = _price_panel({1: 30, 2: 40})
    keys = pd.DataFrame({"stock_id": [2, 1], "date": [panel["date"].iat[30 + 25],
                                                      panel["date"].iat[25]]})
    s = benchmark_signals(panel, keys, "week", ["STR", "WSTR"])
    assert s["STR"].tolist() == pytest.approx([-21 / 104, -21 / 104], rel=1e-12)
    bad = pd.DataFrame({"stock_id": [1], "date": [pd.Timestamp("1999-01-01")]})
    with pytest.raises(ValueError, match="not in the panel.*stock_id=1"):
        benchmark_signals(panel, bad, "week", ["STR"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchmark_signals(panel, keys, "week", ["XYZ"])


def test_period_ends():
    d = pd.to_datetime(["2001-01-29", "2001-01-31", "2001-02-01", "2001-02-02", "2001-02-05",
                        "2001-03-30", "2001-04-02"])
    assert list(period_ends(d, "month").strftime("%m-%d")) == ["01-31", "02-05", "03-30", "04-02"]
    # Weeks Mon-Sun: Jan 29-Feb 4 ends on Fri Feb 2.
    assert list(period_ends(d, "week").strftime("%m-%d"))[:2] == ["02-02", "02-05"]
    assert list(period_ends(d, "quarter").strftime("%m-%d")) == ["03-30", "04-02"]


def test_trend_recovers_planted_slopes():
    """Returns planted as r_t = c + b2 A2_{t-1} + b3 A3_{t-1} + e_t with e_t exactly orthogonal to
    [1, A2_{t-1}, A3_{t-1}] across stocks: each date's OLS slopes are exactly (b2, b3), so the
    forecast is b2 A2_t + b3 A3_t once K = 3 slopes exist."""
    rng = np.random.default_rng(7)
    n_stocks, n_t = 40, 14
    c, b2, b3 = 0.002, 0.05, -0.03
    P = np.empty((n_stocks, n_t))
    P[:, 0] = 50 + 10 * rng.random(n_stocks)
    r = np.zeros((n_stocks, n_t))
    r[:, 1:3] = rng.normal(0, .05, (n_stocks, 2))
    P[:, 1] = P[:, 0] * (1 + r[:, 1])
    P[:, 2] = P[:, 1] * (1 + r[:, 2])

    def A(L, t):  # mean of the last L closes / latest close, straight from the price matrix
        return P[:, t - L + 1:t + 1].mean(axis=1) / P[:, t]

    for t in range(3, n_t):
        X = np.column_stack([np.ones(n_stocks), A(2, t - 1), A(3, t - 1)])
        e = rng.normal(0, .03, n_stocks)
        e -= X @ np.linalg.lstsq(X, e, rcond=None)[0]  # residual: orthogonal to X
        r[:, t] = c + b2 * X[:, 1] + b3 * X[:, 2] + e
        P[:, t] = P[:, t - 1] * (1 + r[:, t])
    dates = pd.date_range("2001-01-05", periods=n_t, freq="W-FRI")
    panel = pd.DataFrame({"stock_id": np.repeat(np.arange(n_stocks, dtype=np.int32), n_t),
                          "date": np.tile(dates, n_stocks), "ret": r.ravel()})
    tr = trend_signal(panel, pd.DatetimeIndex(dates), "week", history_days=3, lags=(2, 3),
                      slope_window=3)
    sl = tr.attrs["slopes"]
    # Slopes exist from t = 3 (A3 at t-1 = 2 needs 3 records); exactly (b2, b3).
    assert sl.iloc[:3, :2].isna().all().all()
    np.testing.assert_allclose(sl.iloc[3:, :2].to_numpy(), np.tile([b2, b3], (n_t - 3, 1)),
                               atol=1e-9)
    assert (sl["n_obs"].iloc[3:] == n_stocks).all()
    got = tr.pivot(index="stock_id", columns="date", values="TREND").to_numpy()
    # beta_bar (mean of 3 slopes) exists from t = 5.
    assert np.isnan(got[:, :5]).all()
    for t in range(5, n_t):
        np.testing.assert_allclose(got[:, t], b2 * A(2, t) + b3 * A(3, t), rtol=1e-8)


def test_trend_history_requirement():
    panel = _price_panel({1: 12})
    with pytest.raises(ValueError, match="shorter than the longest lag"):
        trend_signal(panel, pd.DatetimeIndex(panel["date"]), "week", history_days=10)


def test_calendar_momentum_monthly():
    from pipeline.evaluate.benchmarks import calendar_momentum

    panel = _price_panel({1: 400})  # business days from 2000-01-03, close P_i = 100 + i
    dates = panel["date"]
    i_f = int(np.flatnonzero(dates == pd.Timestamp("2001-06-29"))[0])
    # Formation month June 2001: end record = last business day of May 2001 (2001-05-31),
    # start record = last business day of June 2000 (2000-06-30). Their positions counted with
    # numpy's business-day calendar, independently of the pipeline code.
    i_end = int(np.busday_count("2000-01-03", "2001-05-31"))
    i_start = int(np.busday_count("2000-01-03", "2000-06-30"))
    assert (i_end, i_start) == (368, 129)
    mom = calendar_momentum(panel, np.array([i_f, 200]))
    assert mom[0] == pytest.approx((100 + i_end) / (100 + i_start) - 1, rel=1e-12)
    # Row 200 is in Oct 2000: month F-12 = Oct 1999 precedes the data -> NaN.
    assert np.isnan(mom[1])
    s = benchmark_signals(panel, panel.iloc[[i_f]][["stock_id", "date"]], "month", ["MOM"])
    assert s["MOM"].iat[0] == pytest.approx(468 / 229 - 1, rel=1e-12)
