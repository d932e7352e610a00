"""The Bayes bound of exactly the evaluated rows and label (pipeline.evaluate.bayes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SyntheticConfig, load_config
from pipeline.evaluate.bayes import bayes_bound, gain_recovered, label_horizons
from pipeline.images.windows import period_ends
from pipeline.panel.synthetic import bayes_accuracy, bayes_accuracy_at, generate_market, market_dates

CFG = SyntheticConfig(n_stocks=80, end="1997-12-31", bayes_samples=600, bayes_paths=64)


def test_label_horizons_count_trading_days_to_the_next_period_end():
    cal = pd.bdate_range("2001-01-01", "2001-12-31").values
    me = period_ends(cal, "month")
    h = label_horizons(me[:-1], "month", cal)
    # Business days of the following month: 19-23 on a calendar without holidays.
    nxt = pd.DatetimeIndex(me[1:])
    expected = [len(pd.bdate_range(a + pd.Timedelta(days=1), b)) for a, b in zip(pd.DatetimeIndex(me[:-1]), nxt)]
    assert h.tolist() == expected
    assert 19 <= h.min() and h.max() <= 23
    we = period_ends(cal, "week")
    assert set(label_horizons(we[:-1], "week", cal).tolist()) == {5}
    assert label_horizons(me[:3], "20d", cal).tolist() == [20, 20, 20]
    q = label_horizons(period_ends(cal, "quarter")[:-1], "quarter", cal)
    assert (q >= 60).all() and (q <= 67).all()


def test_label_horizons_refuse_rows_without_that_label():
    cal = pd.bdate_range("2001-01-01", "2001-12-31").values
    with pytest.raises(ValueError, match="row 0: 2001-01-10 is not a month end"):
        label_horizons(np.array(["2001-01-10"], dtype="datetime64[ns]"), "month", cal)
    last = period_ends(cal, "month")[-1:]
    with pytest.raises(ValueError, match="no ret_month label"):
        label_horizons(last, "month", cal)
    with pytest.raises(ValueError, match="label 'fortnight'"):
        label_horizons(last, "fortnight", cal)


@pytest.fixture(scope="module")
def market():
    panel, _ = generate_market(CFG)
    return panel


def _uniform_rows(panel: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    n_hist = panel.groupby("stock_id").cumcount().to_numpy()
    ok = np.flatnonzero(n_hist >= 19)
    pick = np.random.default_rng(seed).choice(ok, n, replace=False)
    return panel.iloc[np.sort(pick)]


def test_fixed_horizon_at_uniform_rows_matches_the_market_table(market):
    rows = _uniform_rows(market, 4000)
    table = bayes_accuracy(CFG, horizons=(5, 60)).set_index("horizon")
    for h in (5, 60):
        at = bayes_accuracy_at(CFG, rows["date"].values, rows["stock_id"].values, np.full(len(rows), h))
        ref = table.loc[h]
        assert abs(at["accuracy"] - ref["accuracy"]) < 4 * np.hypot(at["stderr"], ref["stderr"]), (h, at, ref)
        assert at["accuracy_lower"] <= at["accuracy"] <= at["accuracy_upper"]
        assert at["n_samples"] == CFG.bayes_samples and at["n_rows"] == len(rows)
    # The horizon matters: the 5-record bound is clearly above the 60-record one.
    a5 = bayes_accuracy_at(CFG, rows["date"].values, rows["stock_id"].values, np.full(len(rows), 5))
    a60 = bayes_accuracy_at(CFG, rows["date"].values, rows["stock_id"].values, np.full(len(rows), 60))
    assert a5["accuracy"] - a60["accuracy"] > 3 * np.hypot(a5["stderr"], a60["stderr"])


def test_the_bound_does_not_depend_on_row_order(market):
    rows = _uniform_rows(market, 3000, seed=1)
    h = np.full(len(rows), 20)
    a = bayes_accuracy_at(CFG, rows["date"].values, rows["stock_id"].values, h)
    r = rows.iloc[::-1]
    b = bayes_accuracy_at(CFG, r["date"].values, r["stock_id"].values, h)
    assert a == b
    assert 0 < a["share_up_bayes"] < 1 and 0.4 < a["mean_p_bayes"] < 0.6


def test_no_signal_gives_a_coin_flip(market):
    cfg0 = SyntheticConfig(**{**CFG.__dict__, "signal_strength": 0.0})
    panel0, _ = generate_market(cfg0)
    rows = _uniform_rows(panel0, 2000)
    at = bayes_accuracy_at(cfg0, rows["date"].values, rows["stock_id"].values, np.full(len(rows), 20))
    assert abs(at["accuracy"] - 0.5) < 4 * at["stderr"] + 0.005
    assert at["accuracy_lower"] < 0.51


def test_bad_rows_are_named(market):
    d = market["date"].values[:3]
    s = market["stock_id"].values[:3]
    with pytest.raises(ValueError, match="row 1 has date 1990-01-01"):
        bayes_accuracy_at(CFG, np.array([d[0], np.datetime64("1990-01-01"), d[2]]), s, np.full(3, 5))
    with pytest.raises(ValueError, match="row 2 has stock_id 999"):
        bayes_accuracy_at(CFG, d, np.array([1, 2, 999]), np.full(3, 5))
    with pytest.raises(ValueError, match="row 0 has horizon 0"):
        bayes_accuracy_at(CFG, d, s, np.array([0, 5, 5]))


def test_bayes_bound_of_monthly_label_rows(market):
    cfg = load_config(None, ["synthetic.n_stocks=80", "synthetic.end=1997-12-31",
                             "synthetic.bayes_samples=400", "synthetic.bayes_paths=64"])
    cal = market_dates(cfg.synthetic).values
    me = set(pd.DatetimeIndex(period_ends(cal, "month")[:-1]).tolist())
    rows = market[market["date"].isin(me)]
    n_hist = market.groupby("stock_id").cumcount()
    rows = rows[n_hist.loc[rows.index] >= 39]
    out = bayes_bound(cfg, rows, "month")
    assert out["label"] == "ret_month" and 19 <= out["horizon_min"] <= out["horizon_max"] <= 23
    assert 0.55 < out["accuracy"] < 0.66
    assert gain_recovered(0.5 + 0.5 * (out["accuracy"] - 0.5), out["accuracy"]) == pytest.approx(0.5)
