"""Delayed holding periods (METHOD 7.1): returns by hand, delay 0 = the label, evaluation, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError, load_config
from pipeline.evaluate.core import evaluate_run
from pipeline.evaluate.delays import delay_figure, evaluate_delays, plot_delays
from pipeline.evaluate.portfolios import evaluate_signal
from pipeline.images import labels, windows
from pipeline.io import StaleInputError, mark_done, write_parquet
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PanelMeta, write_panel


def _flat(frame: pd.DataFrame):
    """(offsets, days, ret, calendar) of a (stock_id, date)-sorted panel frame."""
    _, offsets = windows.stock_offsets(frame["stock_id"].to_numpy())
    days = windows.to_days(frame["date"].to_numpy())
    return offsets, days, frame["ret"].to_numpy(np.float64), np.unique(frame["date"].to_numpy())


def test_delayed_returns_by_hand():
    # One stock on eleven business days (Mon 2001-01-01 .. Mon 2001-01-15), returns r_i.
    dates = pd.bdate_range("2001-01-01", periods=11)
    r = np.array([0.01, 0.02, -0.01, 0.03, 0.01, -0.02, 0.0, 0.015, 0.01, -0.005, 0.02])
    f = pd.DataFrame({"stock_id": 1, "date": dates, "ret": r})
    offsets, days, ret, cal = _flat(f)
    growth = np.cumprod(1 + r)  # each record's close relative to the close before the first
    # 5-record label of the image on record 1, delayed d: from close 1+d to close 6+d.
    out = labels.delayed_label_returns(offsets, days, ret, cal, np.array([1]), "5d", [0, 1, 2, 3, 4, 5])
    for d in range(5):
        assert out[d][0] == pytest.approx(growth[6 + d] / growth[1 + d] - 1, rel=1e-12)
    assert np.isnan(out[5][0])  # 6 + 5 = record 11: past the stock's last record
    # Weekly label of Friday 2001-01-05 (record 4): to Friday 2001-01-12 (record 9); delayed by
    # 1 it ends on Monday record 10, by 2 past the panel's end.
    wk = labels.delayed_label_returns(offsets, days, ret, cal, np.array([4]), "week", [0, 1, 2])
    assert wk[0][0] == pytest.approx(growth[9] / growth[4] - 1, rel=1e-12)
    assert wk[1][0] == pytest.approx(growth[10] / growth[5] - 1, rel=1e-12)
    assert np.isnan(wk[2][0])
    # A non-period-end row has no weekly label, whatever the delay.
    assert np.isnan(labels.delayed_label_returns(offsets, days, ret, cal, np.array([2]), "week", [1])[1][0])


def test_delay_zero_is_the_stored_label_bit_for_bit():
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("1999-01-01", "2001-06-30")
    parts = []
    for s in range(6):
        keep = rng.random(len(dates)) > 0.03  # gaps: missing records in the middle
        d = dates[keep][rng.integers(0, 40):len(dates[keep]) - rng.integers(0, 40)]
        parts.append(pd.DataFrame({"stock_id": np.int32(s), "date": d, "ret": rng.normal(0, 0.02, len(d))}))
    f = pd.concat(parts, ignore_index=True)
    offsets, days, ret, cal = _flat(f)
    ids = np.unique(f["stock_id"].to_numpy())
    rows = np.arange(len(f), dtype=np.int64)[::3]
    for mode in ("strict", "next_available"):
        tab = labels.label_table(ids, offsets, days, ret, np.ones(len(f)), cal, rows, mode)
        for suffix in ("5d", "20d", "60d", "week", "month", "quarter"):
            got = labels.delayed_label_returns(offsets, days, ret, cal, rows, suffix, [0, 3], mode)
            assert np.array_equal(got[0], tab[f"ret_{suffix}"].to_numpy(), equal_nan=True), (mode, suffix)
            # Delayed: defined only where the label is, and never the same numbers.
            assert not (np.isnan(tab[f"ret_{suffix}"].to_numpy()) & ~np.isnan(got[3])).any()
            both = ~np.isnan(got[3])
            assert both.sum() > 10 and not np.allclose(got[3][both], got[0][both])


def _experiment(tmp_path, n_stocks=30, **set_):
    rng = np.random.default_rng(11)
    dates = pd.bdate_range("2001-01-01", "2003-12-31")
    parts = []
    for s in range(n_stocks):
        r = rng.normal(0.0005, 0.02, len(dates))
        close = 20 * np.cumprod(1 + r)
        parts.append(pd.DataFrame({
            "stock_id": np.int32(s), "date": dates, "open": close, "high": close * 1.01,
            "low": close * 0.99, "close": close, "volume": 1000.0 + s, "ret": r,
            "mktcap": close * (1000.0 + s), "exchange": "NYSE", "source": "test"}))
    panel = pd.concat(parts, ignore_index=True)
    cfg = load_config(None, [f"data_dir={tmp_path}", "name=t", "evaluate.benchmarks=[]",
                             "evaluate.characteristics=false", *[f"{k}={v}" for k, v in set_.items()]])
    write_panel(paths.panel_dir(cfg), panel, pd.DataFrame({"stock_id": range(n_stocks)}),
                PanelMeta(source="test", mktcap_is_proxy=True, mktcap_units="$ (proxy)"))
    mark_done(paths.panel_dir(cfg), panel_settings_hash(cfg))
    px = panel.pivot(index="date", columns="stock_id", values="close")
    me_pos = np.flatnonzero(pd.Series(dates).groupby(dates.to_period("M")).transform("max") == dates)
    me_pos = me_pos[dates[me_pos].year >= 2002]

    def held(d: int) -> pd.DataFrame:  # hand computation: close-to-close from d records later
        out = []
        for a, b in zip(me_pos, np.r_[me_pos[1:], -1]):
            v = (px.iloc[b + d] / px.iloc[a + d] - 1) if b >= 0 and b + d < len(dates) else px.iloc[a] * np.nan
            out.append(pd.DataFrame({"stock_id": px.columns.astype("int32"), "date": dates[a],
                                     "ret": v.to_numpy()}))
        return pd.concat(out, ignore_index=True)

    pred = held(0).rename(columns={"ret": "ret_month"})
    pred["p_up"] = np.clip(0.5 + 3 * np.nan_to_num(held(1)["ret"].to_numpy()) + rng.normal(0, 0.02, len(pred)),
                           0.01, 0.99)
    pred["mktcap"] = panel.set_index(["stock_id", "date"]).loc[
        pd.MultiIndex.from_frame(pred[["stock_id", "date"]]), "mktcap"].to_numpy()
    for c in ("ret_5d", "ret_20d", "ret_60d", "ret_week", "ret_quarter", "ewma_vol"):
        pred[c] = np.nan
    pred["label"] = np.int8(2)
    write_parquet(paths.run_dir(cfg) / "predictions.parquet", pred)
    return cfg, pred, held


def test_evaluate_with_delays(tmp_path):
    cfg, pred, held = _experiment(tmp_path, **{"evaluate.delays": "[0,1,2,5]"})
    m = evaluate_run(cfg)
    out = paths.eval_dir(cfg)
    tab = pd.read_parquet(out / "delays.parquet")
    assert list(tab["delay"].unique()) == [0, 1, 2, 5] and set(tab["weighting"]) == {"ew", "vw"}
    # Delay 0 is the evaluation itself, number for number.
    for w in ("ew", "vw"):
        row = tab[(tab.delay == 0) & (tab.weighting == w)].iloc[0]
        s = m["strategies"]["CNN"]
        assert row["sharpe"] == s[f"{w}_sr"] and row["ann_ret"] == s[f"{w}_ret"]
        assert row["t_nw"] == s[f"{w}_t_nw"] and row["turnover_pct"] == s[f"{w}_turnover"]
        assert row["n_rows"] == m["n"] and row["n_lost_to_delay"] == 0
    assert tab.loc[tab.delay == 0, "ic_mean"].iloc[0] == pytest.approx(m["spearman"], rel=1e-12)
    # Delay 1 by hand: the same rows and signal, held from one record later.
    r1 = held(1)["ret"].to_numpy()
    hand = pred.assign(ret=r1)[~np.isnan(r1)]
    ev = evaluate_signal(hand, "p_up", "ret", "month", ["ew", "vw"])
    port = pd.read_parquet(out / "delay_portfolios.parquet")
    got = port[port.delay == 1].drop(columns="delay").sort_values(["weighting", "date", "decile"])
    exp = ev.returns.sort_values(["weighting", "date", "decile"])
    np.testing.assert_allclose(got["ret"].to_numpy(), exp["ret"].to_numpy(), rtol=1e-10, atol=1e-14)
    assert (got["n"].to_numpy() == exp["n"].to_numpy()).all()
    ew1 = tab[(tab.delay == 1) & (tab.weighting == "ew")].iloc[0]
    assert ew1["sharpe"] == pytest.approx(ev.performance.loc[("ew", "H-L"), "sharpe"], rel=1e-9)
    # The signal was built on the delay-1 return: it is strongest there.
    assert ew1["sharpe"] > tab[(tab.delay == 5) & (tab.weighting == "ew")]["sharpe"].iloc[0]
    # November 2003's month ends on the panel's last day: every delay >= 1 loses its 30 rows.
    for d, lost in ((1, 30), (2, 30), (5, 30)):
        r = tab[(tab.delay == d) & (tab.weighting == "ew")].iloc[0]
        assert r["n_lost_to_delay"] == lost and r["n_dropped_missing_return"] == 30 + lost
        assert r["n_rows"] == m["n"] - lost
    assert [r["delay"] for r in m["delays"]] == [0, 0, 1, 1, 2, 2, 5, 5]
    assert (out / "figures" / "delays.png").stat().st_size > 1000
    assert (out / "tables" / "delays.csv").read_text().startswith("delay,weighting,")


def test_delays_refuse_labels_the_panel_does_not_reproduce(tmp_path):
    cfg, pred, _ = _experiment(tmp_path, n_stocks=12)
    bad = pred.copy()
    bad.loc[5, "ret_month"] += 0.01
    with pytest.raises(StaleInputError, match=r"1 rows' ret_month is not reproduced by the panel, e.g. row 5"):
        evaluate_delays(bad, "p_up", "ret_month", "month", "month", ["ew"], [0, 1], paths.panel_dir(cfg))


def test_plot_delays_returns_its_axes():
    t = pd.DataFrame({"delay": [0, 1, 0, 1], "weighting": ["ew", "ew", "vw", "vw"],
                      "sharpe": [2.0, 1.0, 1.0, 0.5], "ann_ret": [0.2, 0.1, 0.1, 0.05]})
    ax = plot_delays(t, "sharpe")
    assert [list(line.get_ydata()) for line in ax.get_lines()[:2]] == [[2.0, 1.0], [1.0, 0.5]]
    fig = delay_figure(t)
    assert len(fig.axes) == 2 and list(fig.axes[1].get_lines()[0].get_ydata()) == [20.0, 10.0]


def test_delays_refused_at_load():
    for bad in ("[6]", "[-1]", "[0, 7]"):
        with pytest.raises(ConfigError, match=r"'evaluate.delays' has \[.*\].*0\.\.5"):
            load_config(None, [f"evaluate.delays={bad}"])
    with pytest.raises(ConfigError, match=r"'evaluate.delays' \[1, 1\] lists a delay twice"):
        load_config(None, ["evaluate.delays=[1, 1]"])
    assert load_config(None, ["evaluate.delays=[0,1,2,3,4,5]"]).evaluate.delays == [0, 1, 2, 3, 4, 5]
