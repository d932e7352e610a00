"""Tests of the embedded synthetic market (pipeline/panel/synthetic.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SyntheticConfig
from pipeline.panel import synthetic as S
from pipeline.panel.store import PANEL_COLUMNS, check_contract

# Full default period with fewer stocks: the cross-section and listing tests need the real calendar.
FULL = SyntheticConfig(n_stocks=80)
# A short market for everything that does not depend on the calendar.
SMALL = SyntheticConfig(n_stocks=40, start="2001-01-01", end="2004-12-31", seed=7,
                        bayes_samples=300, bayes_paths=64)


@pytest.fixture(scope="module")
def full():
    return S.generate_market(FULL)


@pytest.fixture(scope="module")
def small():
    return S.generate_market(SMALL)


def test_determinism_same_seed_identical_different_seed_differs(small):
    df, stocks = small
    df2, stocks2 = S.generate_market(SMALL)
    pd.testing.assert_frame_equal(df, df2)
    pd.testing.assert_frame_equal(stocks, stocks2)
    df3, _ = S.generate_market(dataclasses.replace(SMALL, seed=8))
    assert len(df3) != len(df) or not np.allclose(df3["close"].to_numpy(), df["close"].to_numpy())


def test_contract_columns_and_dtypes(full):
    df, stocks = full
    check_contract(df, "synthetic")
    assert list(df.columns) == PANEL_COLUMNS
    assert df["stock_id"].dtype == np.int32
    assert df["date"].dtype == "datetime64[ns]"
    for c in ("open", "high", "low", "close", "volume", "ret", "mktcap"):
        assert df[c].dtype == np.float64, c
        assert np.isfinite(df[c]).all(), c
    assert (df["source"] == "synthetic").all()
    assert set(df["exchange"]) == {"NYSE", "NASDAQ", "AMEX"}
    assert list(stocks.columns[:3]) == ["stock_id", "ticker", "exchange"]
    assert stocks["ticker"].iloc[0] == "SYN0001" and stocks["stock_id"].iloc[0] == 1
    # The panel's exchange is the stock's exchange.
    ex = df["stock_id"].map(stocks.set_index("stock_id")["exchange"])
    assert (ex.to_numpy() == df["exchange"].to_numpy()).all()
    # Only business days in the configured range.
    assert df["date"].min() >= pd.Timestamp(FULL.start)
    assert df["date"].max() <= pd.Timestamp(FULL.end)
    assert (df["date"].dt.day_of_week < 5).all()


def test_ohlc_volume_consistency(full):
    df, _ = full
    o, h, lo, c = (df[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (lo > 0).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (h >= np.maximum(o, c)).all()
    assert (h > lo).all()
    v = df["volume"].to_numpy()
    assert (v >= 100).all() and (v == np.round(v)).all()


def test_ret_is_close_to_close_and_records_are_consecutive(full):
    df, _ = full
    sid, c, r = df["stock_id"].to_numpy(), df["close"].to_numpy(), df["ret"].to_numpy()
    same = sid[1:] == sid[:-1]
    np.testing.assert_allclose(c[:-1][same] * (1.0 + r[1:][same]), c[1:][same], rtol=1e-12, atol=0)
    # No gaps inside a stock's life: consecutive records are consecutive business days.
    dates = S.market_dates(FULL)
    pos = dates.get_indexer(df["date"])
    assert (pos >= 0).all()
    assert (np.diff(pos)[same] == 1).all()
    # Daily vol is realistic (2-3%).
    assert 0.018 < np.std(np.log1p(r)) < 0.032


def test_mktcap_is_close_times_shares_in_thousands(full):
    df, stocks = full
    shares = df["stock_id"].map(stocks.set_index("stock_id")["shares"]).to_numpy()
    np.testing.assert_array_equal(df["mktcap"].to_numpy(), df["close"].to_numpy() * shares / 1000.0)
    assert (stocks["shares"] > 0).all()


def test_listing_and_delisting(full):
    df, stocks = full
    first = df.groupby("stock_id")["date"].min()
    last = df.groupby("stock_id")["date"].max()
    d0, d1 = df["date"].min(), df["date"].max()
    whole = ((first == d0) & (last == d1)).sum()
    later = (first > d0).sum()
    delisted = (last < d1).sum()
    assert whole >= 0.15 * FULL.n_stocks
    assert later >= 0.2 * FULL.n_stocks
    assert delisted >= 0.2 * FULL.n_stocks
    # The id map's dates are the panel's.
    st = stocks.set_index("stock_id")
    assert (st.loc[first.index, "list_date"].to_numpy() == first.to_numpy()).all()
    assert (st.loc[last.index, "delist_date"].to_numpy() == last.to_numpy()).all()
    # Prices respect the $1 listing floor except on a delisting day.
    below = df["close"].to_numpy() < S.PARAMS.min_price
    is_last = np.r_[df["stock_id"].to_numpy()[1:] != df["stock_id"].to_numpy()[:-1], True]
    assert not (below & ~is_last).any()


def test_cross_section_size(full):
    df, _ = full
    n_alive = df.groupby("date").size()
    assert n_alive.min() >= 0.4 * FULL.n_stocks
    assert n_alive.max() <= FULL.n_stocks
    # Many stocks trade from the start, with I60+MA history (120 records) by the end of January 1993.
    hist = df[df["date"] <= "1993-01-29"].groupby("stock_id").size()
    assert (hist >= 120).sum() >= 0.4 * FULL.n_stocks


def test_planted_features_hand_computed():
    # One stock, 25 records: closes 10, 11, ..., 34; high/low bracket the close asymmetrically.
    n = 25
    close = 10.0 + np.arange(n)
    vol = np.full(n, 1000.0)
    vol[-1] = 1000.0 * np.e  # log V jumps by exactly 1 on the last day
    ret = np.r_[0.01, close[1:] / close[:-1] - 1.0]
    df = pd.DataFrame({"stock_id": np.int32(3), "date": pd.bdate_range("2000-01-03", periods=n),
                       "open": close, "high": close * np.e ** 0.3, "low": close * np.e ** -0.1,
                       "close": close, "volume": vol, "ret": ret, "mktcap": 1.0,
                       "exchange": "NYSE", "source": "synthetic"})
    f = S.planted_features(df)
    assert f["n_hist"].tolist() == list(range(n))
    assert f.loc[:18, ["rev", "trend", "intra", "surge_dir"]].isna().all().all()
    t = n - 1
    assert f["rev"].iat[t] == pytest.approx(np.log(34.0 / 29.0), rel=1e-12)
    ma = np.mean(close[t - 19:t + 1])  # closes 15..34 -> 24.5
    assert ma == 24.5
    assert f["trend"].iat[t] == pytest.approx(np.log(34.0 / 24.5), rel=1e-12)
    assert f["intra"].iat[t] == pytest.approx(0.1 / 0.4 - 0.5, abs=1e-12)
    # surge: log V_t minus the mean of 20 log volumes of which one is 1 higher: 1 - 1/20.
    assert f["surge_dir"].iat[t] == pytest.approx(1.0 - 1.0 / 20.0, abs=1e-12)
    assert f["surge_dir"].iat[t - 1] == pytest.approx(0.0, abs=1e-12)


def test_planted_effect_recovered_by_regression(full):
    """OLS of the next-day log return on the four features recovers the configured coefficients."""
    df, stocks = full
    f = S.planted_features(df)
    sig = df["stock_id"].map(stocks.set_index("stock_id")["idio_vol"]).to_numpy()
    y = np.log1p(df["ret"].to_numpy())
    sid = df["stock_id"].to_numpy()
    ynext = np.r_[y[1:], np.nan]
    ynext[np.r_[sid[1:] != sid[:-1], True]] = np.nan
    X = np.c_[-f["rev"], f["trend"], sig * f["intra"], sig * f["surge_dir"]]
    ok = np.isfinite(X).all(axis=1) & np.isfinite(ynext)
    # Remove each day's cross-sectional mean (mostly the common market shock).
    next_date = np.r_[df["date"].to_numpy()[1:], df["date"].to_numpy()[-1:]][ok]
    _, inv = np.unique(next_date, return_inverse=True)
    cnt = np.bincount(inv)

    def demean(a):
        s = np.zeros((len(cnt),) + a.shape[1:])
        np.add.at(s, inv, a)
        return a - (s / (cnt if a.ndim == 1 else cnt[:, None]))[inv]

    Xd, yd = demean(X[ok]), demean(ynext[ok])
    b = np.linalg.lstsq(Xd, yd, rcond=None)[0]
    se = np.sqrt(np.diag(np.var(yd - Xd @ b) * np.linalg.inv(Xd.T @ Xd)))
    p = S.PARAMS
    want = np.array([p.a_rev, p.a_trend, p.a_intra, p.a_vol]) * FULL.signal_strength
    assert np.all(np.abs(b - want) < 5 * se + 1e-3), (b, want, se)
    assert b[0] > 0 and b[1] > 0  # reversal and trend have the documented signs


def test_one_day_bayes_rule_matches_realised_data(full):
    """The 1-day Bayes rule (sign of the drift computed from the panel's features) scores on the
    realised next-day returns what its probabilities promise, and what bayes_accuracy reports."""
    from scipy.special import ndtr

    df, stocks = full
    f = S.planted_features(df)
    st = stocks.set_index("stock_id")
    sig = df["stock_id"].map(st["idio_vol"]).to_numpy()
    beta = df["stock_id"].map(st["beta"]).to_numpy()
    p = S.PARAMS
    mu = p.mu0 + FULL.signal_strength * (-p.a_rev * f["rev"].to_numpy() + p.a_trend * f["trend"].to_numpy()
                                         + sig * (p.a_intra * f["intra"].to_numpy()
                                                  + p.a_vol * f["surge_dir"].to_numpy()))
    sd = np.sqrt((beta * p.sigma_m) ** 2 + sig ** 2)
    y = np.log1p(df["ret"].to_numpy())
    sid = df["stock_id"].to_numpy()
    ynext = np.r_[y[1:], np.nan]
    ynext[np.r_[sid[1:] != sid[:-1], True]] = np.nan
    ok = np.isfinite(mu) & np.isfinite(ynext)
    prob = ndtr(mu[ok] / sd[ok])
    promised = np.maximum(prob, 1 - prob).mean()
    realised = ((mu[ok] > 0) == (ynext[ok] > 0)).mean()
    assert 0.58 < promised < 0.70
    assert abs(realised - promised) < 0.005  # ~6 binomial standard errors at n ~ 4e5
    # One day ahead needs no simulated day, so two paths per state suffice.
    res = S.bayes_accuracy(dataclasses.replace(FULL, bayes_paths=2), horizons=(1,))
    assert abs(res["accuracy"].iat[0] - promised) < 4 * res["stderr"].iat[0]


def test_restart_from_captured_state_reproduces_the_generator():
    """The Monte-Carlo restart uses exactly the generator's dynamics: replaying the generator's own
    shocks from a captured state gives the panel's next return."""
    cfg = SMALL
    dates, uni, mv, cap = S._simulate(cfg, capture=(np.array([300, 500]), np.array([5, 17])))
    rng = np.random.default_rng([cfg.seed, 2])
    n = cfg.n_stocks
    shocks = {}
    for t in range(-S.PARAMS.burn_in, 502):
        z = S._draw_shocks(rng, n)
        zm = rng.standard_normal((2, 1))
        if t in (301, 501):
            shocks[t] = (z, zm)
    for j, (d, i) in enumerate([(300, 5), (500, 17)]):
        st = S._State(cap.c[:, [j]].copy(), cap.logv[:, [j]].copy(), cap.intra[[j]].copy(),
                      cap.sgn[[j]].copy(), S.L - 1, cap.sc[[j]].copy(), cap.sv[[j]].copy())
        z, zm = shocks[d + 1]
        out = S._step(st, uni.units.take(np.array([i])), cfg.signal_strength, z[:, [i]], zm)
        assert out["r"][0] == pytest.approx(mv["r"][d + 1, i], abs=1e-14)
        assert out["logv"][0] == pytest.approx(mv["logv"][d + 1, i], abs=1e-12)


def test_bayes_accuracy_zero_signal_is_chance():
    res = S.bayes_accuracy(dataclasses.replace(SMALL, signal_strength=0.0), horizons=(1, 5, 20))
    assert list(res.columns[:4]) == ["horizon", "accuracy", "stderr", "n_samples"]
    assert res["horizon"].tolist() == [1, 5, 20]
    assert (res["n_samples"] == SMALL.bayes_samples).all()
    # One day ahead is analytic: with zero drift P(up) is exactly 1/2.
    assert res["accuracy"].iat[0] == 0.5
    assert (np.abs(res["accuracy"] - 0.5) <= 3 * res["stderr"] + 1e-12).all()
    assert (res["accuracy_lower"] <= res["accuracy"]).all()
    assert (res["accuracy"] <= res["accuracy_upper"]).all()


def test_bayes_accuracy_default_signal_is_clearly_above_chance_and_deterministic():
    res = S.bayes_accuracy(SMALL, horizons=(5, 20))
    acc = res.set_index("horizon")
    assert acc.loc[5, "accuracy"] - 3 * acc.loc[5, "stderr"] > 0.56
    assert acc.loc[20, "accuracy"] - 3 * acc.loc[20, "stderr"] > 0.54
    assert acc.loc[5, "accuracy"] < 0.72 and acc.loc[20, "accuracy"] < 0.70
    pd.testing.assert_frame_equal(res, S.bayes_accuracy(SMALL, horizons=(20, 5)))


def test_errors_name_the_setting():
    with pytest.raises(ValueError, match="n_stocks"):
        S.generate_market(dataclasses.replace(SMALL, n_stocks=0))
    with pytest.raises(ValueError, match="start"):
        S.generate_market(dataclasses.replace(SMALL, start="2005-01-01", end="2004-01-01"))
    with pytest.raises(ValueError, match="bayes_paths"):
        S.bayes_accuracy(dataclasses.replace(SMALL, bayes_paths=3))
    with pytest.raises(ValueError, match="horizons"):
        S.bayes_accuracy(SMALL, horizons=(0, 5))
    with pytest.raises(ValueError, match="signal_strength"):
        S.generate_market(dataclasses.replace(SMALL, signal_strength=3.0))
    with pytest.raises(ValueError, match="signal_strength"):
        S.bayes_accuracy(dataclasses.replace(SMALL, signal_strength=-0.5))
