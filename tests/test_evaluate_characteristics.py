"""Table-5 characteristics on hand-made panels with known answers, their per-date Spearman
correlation with P(up), and what evaluate_run writes (pipeline.evaluate.characteristics)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError, load_config
from pipeline.evaluate.benchmarks import benchmark_signals
from pipeline.evaluate.characteristics import (CHARACTERISTICS, OWN, characteristic_correlations,
                                               characteristics, market_return, own_characteristics)
from pipeline.evaluate.core import evaluate_run
from pipeline.evaluate.statistics import newey_west_t

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_core import _experiment  # noqa: E402


def _panel(n_stocks: int = 12, n_days: int = 300, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """Random stocks on one business-day calendar; stock s starts ``start * s`` days late."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2001-01-02", periods=n_days)
    parts = []
    for s in range(n_stocks):
        d = dates[start * s:]
        r = rng.normal(0.0005, 0.02, len(d))
        parts.append(pd.DataFrame({"stock_id": np.int32(s), "date": d, "ret": r,
                                   "close": 10 * np.cumprod(1 + r),
                                   "volume": rng.integers(1, 5, len(d)) * 1000.0}))
    return pd.concat(parts, ignore_index=True)


def _rows(panel: pd.DataFrame, stock: int) -> np.ndarray:
    return np.flatnonzero(panel["stock_id"].to_numpy() == stock)


# --------------------------------------------------------------------------------------------------
# Known answers


def test_beta_two_and_no_delay_for_twice_the_market():
    p = _panel()
    # Stock 0's return = 2 x the EW market, which includes stock 0 itself: r0 = 2 (S + r0) / N with
    # S the sum of the other stocks' returns, so r0 = 2 S / (N - 2).
    n = p["stock_id"].nunique()
    others = p[p["stock_id"] != 0].groupby("date")["ret"].sum()
    p.loc[p["stock_id"] == 0, "ret"] = (2 * others / (n - 2)).to_numpy()
    np.testing.assert_allclose(p.loc[p["stock_id"] == 0, "ret"].to_numpy(),
                               2 * market_return(p).to_numpy(), rtol=1e-12)
    rows = _rows(p, 0)
    o = own_characteristics(p, rows)
    # 60 records needed for the window, at least 30 usable (the first 4 market days lack lags).
    ok = np.arange(len(rows)) >= 4 + 30 - 1
    np.testing.assert_allclose(o["beta"].to_numpy()[ok], 2.0, rtol=1e-9)
    assert o["beta"].iloc[: 4 + 29].isna().all()
    # The market explains all of it contemporaneously: D1 = 1 - 1/1 = 0.
    np.testing.assert_allclose(o["price_delay"].to_numpy()[ok], 0.0, atol=1e-9)


def test_price_delay_of_a_stock_that_follows_yesterdays_market():
    p = _panel(n_stocks=15, seed=4)
    n = p["stock_id"].nunique()
    dates = np.sort(p["date"].unique())
    s = p[p["stock_id"] != 0].groupby("date")["ret"].sum().reindex(dates).to_numpy()
    m = np.zeros(len(dates))
    r0 = np.zeros(len(dates))
    for t in range(len(dates)):  # r0_t = m_{t-1}, with m_t = (S_t + r0_t) / N (a recursion)
        r0[t] = m[t - 1] if t else 0.0
        m[t] = (s[t] + r0[t]) / n
    p.loc[p["stock_id"] == 0, "ret"] = r0
    o = own_characteristics(p, _rows(p, 0))
    i = 200  # the window: records 141..200; the regressions see m_t and m_{t-1..t-4}
    y, m0 = r0[i - 59:i + 1], m[i - 59:i + 1]
    r2_r = np.corrcoef(y, m0)[0, 1] ** 2
    # The unrestricted regression fits y = m_{t-1} exactly (R2 = 1), so D1 = 1 - R2_restricted.
    assert o["price_delay"].iat[i] == pytest.approx(1 - r2_r, rel=1e-7)
    assert o["price_delay"].iat[i] > 0.8


def test_window_statistics_match_a_direct_computation():
    p = _panel(n_stocks=8, n_days=320, seed=2, start=9)
    p.loc[p.sample(frac=0.1, random_state=1).index, "volume"] = np.nan
    p.loc[p.sample(frac=0.1, random_state=2).index, "volume"] = 0.0
    o = own_characteristics(p, np.arange(len(p)))
    mkt = market_return(p)
    rng = np.random.default_rng(5)
    for i in rng.choice(len(p), 40, replace=False):
        g = p[(p["stock_id"] == p["stock_id"].iat[i]) & (p["date"] <= p["date"].iat[i])]
        w = g.tail(20)
        if len(w) < 10:
            assert np.isnan(o["volatility"].iat[i]) and np.isnan(o["zero_trade"].iat[i])
            continue
        assert o["volatility"].iat[i] == pytest.approx(w["ret"].std(ddof=1), rel=1e-9)
        assert o["zero_trade"].iat[i] == (~(w["volume"] > 0)).sum()
        dv = w["close"] * w["volume"]
        pos = dv[dv > 0]
        exp_dv = np.log(dv.dropna().mean()) if dv.notna().sum() >= 10 else np.nan
        assert o["dollar_volume"].iat[i] == pytest.approx(exp_dv, rel=1e-9, nan_ok=True)
        exp_il = (w["ret"].abs()[dv > 0] / (pos / 1e6)).mean() if len(pos) >= 10 else np.nan
        assert o["illiquidity"].iat[i] == pytest.approx(exp_il, rel=1e-9, nan_ok=True)
        adj = np.cumprod(1 + g["ret"].to_numpy())
        exp_hi = adj[-1] / adj[-252:].max() if len(g) >= 126 else np.nan
        assert o["high_52w"].iat[i] == pytest.approx(exp_hi, rel=1e-9, nan_ok=True)
        b = g.tail(60)
        ti = mkt.index.get_indexer(b["date"])
        keep = ti >= 4
        if keep.sum() >= 30:
            x = mkt.to_numpy()[ti[keep]]
            assert o["beta"].iat[i] == pytest.approx(np.polyfit(x, b["ret"].to_numpy()[keep], 1)[0],
                                                     rel=1e-7)


def test_zero_trade_counts_three_zero_volume_days():
    p = _panel(n_stocks=3, n_days=60)
    rows = _rows(p, 1)
    i = rows[40]
    # Three of the last 20 records (rows 21..40 of the stock) have zero or missing volume.
    p.loc[[rows[22], rows[30]], "volume"] = 0.0
    p.loc[rows[40], "volume"] = np.nan
    p.loc[rows[20], "volume"] = 0.0  # just outside the window: not counted
    o = own_characteristics(p, np.array([i, rows[9], rows[8]]))
    assert o["zero_trade"].tolist()[:2] == [3.0, 0.0]  # row 9 has 10 records: enough
    assert np.isnan(o["zero_trade"].iat[2])  # 9 records: fewer than half the window


def test_52_week_high_is_one_at_a_new_high():
    p = _panel(n_stocks=2, n_days=300)
    rows = _rows(p, 0)
    p.loc[rows[250], "ret"] = 2.0  # tripling: a new high, above everything before
    p.loc[rows[251], "ret"] = -0.5
    o = own_characteristics(p, rows[[125, 250, 251]])
    assert o["high_52w"].iat[1] == pytest.approx(1.0)
    assert o["high_52w"].iat[2] == pytest.approx(0.5)
    assert o["high_52w"].iat[0] <= 1.0 and np.isfinite(o["high_52w"].iat[0])  # 126 records


def test_no_look_ahead():
    p = _panel(n_days=320)
    keys = p[p["date"] == p["date"].unique()[280]][["stock_id", "date"]]
    before = characteristics(p, keys, "month", history_days=200)
    q = p.copy()
    future = q["date"] > keys["date"].iat[0]
    q.loc[future, "ret"] = 0.3
    q.loc[future, "close"] *= 50
    q.loc[future, "volume"] = 0.0
    after = characteristics(q, keys, "month", history_days=200)
    # (TREND's slopes use only dates up to the row, MOM its past months: nothing after the date.)
    pd.testing.assert_frame_equal(before, after)
    assert before[list(OWN)].notna().all().all()


def test_characteristics_reuse_given_benchmark_signals():
    p = _panel(n_days=320)
    keys = p[p["date"].isin(p["date"].unique()[[270, 290]])][["stock_id", "date"]]
    sig = benchmark_signals(p, keys, "month", ["MOM", "STR"], history_days=200)
    full = characteristics(p, keys, "month", history_days=200)
    sig["STR"] = 7.0  # a marker: the given column is used, not recomputed
    reused = characteristics(p, keys, "month", history_days=200, signals=sig)
    assert (reused["STR"] == 7.0).all()
    pd.testing.assert_frame_equal(reused.drop(columns="STR"), full.drop(columns="STR"))
    assert list(full.columns) == ["stock_id", "date", *CHARACTERISTICS]
    np.testing.assert_allclose(full["WSTR"].to_numpy(), benchmark_signals(
        p, keys, "month", ["WSTR"], history_days=200)["WSTR"].to_numpy())


# --------------------------------------------------------------------------------------------------
# Correlations


def test_signal_equal_to_a_characteristic_correlates_one_and_small_dates_are_skipped():
    rng = np.random.default_rng(1)
    dates = pd.date_range("2005-01-31", periods=6, freq="ME")
    rows = []
    for j, d in enumerate(dates):
        n = 4 if j == 2 else 25  # the third date has only 4 stocks: skipped
        rows.append(pd.DataFrame({"stock_id": np.arange(n), "date": d, "p_up": rng.random(n)}))
    pred = pd.concat(rows, ignore_index=True)
    chars = pred[["stock_id", "date"]].copy()
    chars["same"] = pred["p_up"] * 3 - 1  # a monotone transform: Spearman 1
    chars["opp"] = -pred["p_up"]
    chars["noise"] = rng.random(len(pred))
    chars.loc[chars["date"] == dates[4], "noise"] = np.nan  # no values that date: skipped
    out = characteristic_correlations(pred, chars)
    assert list(out.index) == ["same", "opp", "noise"]
    assert out.at["same", "mean"] == pytest.approx(1.0) and out.at["opp", "mean"] == pytest.approx(-1.0)
    assert out.at["same", "n_dates"] == 5 and out.at["same", "n_dates_skipped"] == 1
    assert out.at["same", "mean_n_stocks"] == 25
    assert out.at["noise", "n_dates"] == 4 and out.at["noise", "n_dates_skipped"] == 2
    # The t-statistics of the per-date correlations, by hand.
    per = []
    for d in dates[[0, 1, 3, 5]]:
        m = pred["date"] == d
        per.append(pd.Series(pred.loc[m, "p_up"]).corr(chars.loc[m, "noise"], method="spearman"))
    per = np.array(per)
    assert out.at["noise", "mean"] == pytest.approx(per.mean())
    assert out.at["noise", "sd"] == pytest.approx(per.std(ddof=1))
    assert out.at["noise", "t"] == pytest.approx(per.mean() / (per.std(ddof=1) / 2.0))
    assert out.at["noise", "t_nw"] == pytest.approx(newey_west_t(per))


# --------------------------------------------------------------------------------------------------
# Config and the stage


def test_config_switch():
    assert load_config(None, []).evaluate.characteristics is True
    assert load_config(None, ["evaluate.characteristics=false"]).evaluate.characteristics is False
    with pytest.raises(ConfigError, match="true or false"):
        load_config(None, ["evaluate.characteristics=3"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["evaluate.characteristic=true"])


def test_evaluate_run_writes_characteristics(tmp_path):
    cfg, _ = _experiment(tmp_path / "on", **{"evaluate.benchmarks": "[MOM]"})
    m = evaluate_run(cfg)
    ch = m["characteristics"]
    assert list(ch) == list(CHARACTERISTICS)
    for c in ("MOM", "STR", "WSTR", "volatility", "beta", "price_delay", "high_52w"):
        assert set(ch[c]) == {"mean", "sd", "t", "t_nw", "n_dates"}
        assert -1 <= ch[c]["mean"] <= 1 and 0 < ch[c]["n_dates"] <= 23
    # The fixture's volume is constant per stock: no zero-trade day, so zero_trade is constant and
    # its correlation undefined on every date.
    assert ch["zero_trade"]["n_dates"] == 0 and ch["zero_trade"]["mean"] is None
    tdir = paths.eval_dir(cfg) / "tables"
    tab = pd.read_csv(tdir / "characteristics.csv", comment="#", index_col=0)
    assert len(tab) == len(CHARACTERISTICS)
    assert tab.at["Beta (60d)", "Mean corr"] == pytest.approx(ch["beta"]["mean"], rel=1e-5)
    assert tab.at["Beta (60d)", "Dates"] == ch["beta"]["n_dates"]
    md = (tdir / "characteristics.md").read_text()
    assert "Spearman correlation of P(up) with stock characteristics (Table 5 of the paper)" in md
    assert (tdir / "characteristics.tex").exists()

    cfg2, _ = _experiment(tmp_path / "off", **{"evaluate.benchmarks": "[]",
                                               "evaluate.characteristics": "false"})
    m2 = evaluate_run(cfg2)
    assert m2["characteristics"] is None
    assert not (paths.eval_dir(cfg2) / "tables" / "characteristics.csv").exists()
