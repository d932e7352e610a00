"""Decile sorts, portfolio returns, statistics and turnover on hand-computed fixtures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate import conventions as C
from pipeline.evaluate.portfolios import (assign_deciles, decile_breakpoints, decile_returns,
                                          evaluate_signal, hl_turnover, hl_weights,
                                          monthly_turnover_pct, performance)

D0 = pd.Timestamp("2001-01-31")


def _one_date(x, **cols):
    return pd.DataFrame({"stock_id": np.arange(len(x), dtype=np.int32), "date": D0,
                         "s": np.asarray(x, dtype=float), **cols})


def test_breakpoints_linear_interpolation():
    # n = 5 values 0,10,20,30,40: percentile 10k sits at h = 4k/10, so p10 = 0 + 0.4*10 = 4,
    # p20 = 8, p30 = 12 (h = 1.2), ..., p90 = 36 (h = 3.6), p100 = 40.
    bp = decile_breakpoints(_one_date([30, 0, 40, 10, 20]), "s")
    expect = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    got = bp.loc[D0, [f"p{10 * k}" for k in range(11)]].to_numpy(dtype=float)
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12)
    assert int(bp.loc[D0, "n"]) == 5


def test_deciles_interpolated_breakpoints():
    # breakpoints 4, 8, ..., 36 (above): 0 -> D1; 10 > 4, 8 -> D3; 20 > 4..16 -> D5;
    # 30 > 4..28 (7 of them) -> D8; 40 > all 9 -> D10.
    dec, _ = assign_deciles(_one_date([0, 10, 20, 30, 40]), "s", min_stocks=1)
    assert dec.tolist() == [1, 3, 5, 8, 10]


def test_deciles_right_closed_and_ties():
    # 11 values 0..10: p_{10k} = k exactly; D1 = [0, 1] -> {0, 1}, Dk = (k-1, k] -> {k}.
    dec, _ = assign_deciles(_one_date(range(11)), "s")
    assert dec.tolist() == [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    # Ties: .1 .2 .2 .2 .5 .6 .7 .8 .9 1 1 -> p10 = p20 = p30 = .2, p40 = .5, ..., p80 = .9,
    # p90 = 1.0. The tied .2s are not above p10 -> D1; .5 exceeds three breakpoints -> D4;
    # 1.0 exceeds eight (not p90 = 1.0) -> D9, so D10 is empty on this date.
    x = [.1, .2, .2, .2, .5, .6, .7, .8, .9, 1.0, 1.0]
    dec, bp = assign_deciles(_one_date(x), "s")
    assert dec.tolist() == [1, 1, 1, 1, 4, 5, 6, 7, 8, 9, 9]
    assert bp.loc[D0, "skipped"] == ""


def test_deciles_skip_dates():
    d1 = pd.Timestamp("2001-02-28")
    df = pd.concat([
        _one_date([0.5] * 12),                                       # p10 == p90 -> skipped
        _one_date(range(9)).assign(date=d1),                         # 9 < 10 stocks -> skipped
        _one_date([0.3, np.nan] + list(range(10))).assign(date=pd.Timestamp("2001-03-30")),
    ], ignore_index=True)
    dec, bp = assign_deciles(df, "s")
    assert bp["skipped"].tolist() == ["p10_eq_p90", "too_few_stocks", ""]
    assert (dec[:21] == 0).all()
    # third date: NaN signal -> 0; the other 11 values 0.3, 0..9 are sorted normally.
    assert dec[22] == 0 and dec[21] > 0


def _twenty():
    # 20 stocks with signals 0..19 on one date: p_{10k} = 1.9k, so D1 = {0, 1}, D2 = {2, 3}, ...,
    # D10 = {18, 19} (two per decile).
    ret = np.full(20, 0.0)
    cap = np.full(20, 1.0)
    ret[[0, 1, 18, 19]] = [.01, .03, .06, .02]
    cap[[0, 1, 18, 19]] = [1, 3, 1, 3]
    return _one_date(range(20), ret=ret, mktcap=cap)


def test_decile_returns_ew_vw_hl():
    df = _twenty()
    dec, _ = assign_deciles(df, "s")
    assert dec.tolist() == [k for k in range(1, 11) for _ in range(2)]
    ew = decile_returns(df, dec, "ret", "ew").set_index("decile")
    # D1 EW (.01 + .03)/2 = .02; D10 (.06 + .02)/2 = .04; H-L = .02.
    assert ew.at["1", "ret"] == pytest.approx(.02, abs=1e-15)
    assert ew.at["10", "ret"] == pytest.approx(.04, abs=1e-15)
    assert ew.at["H-L", "ret"] == pytest.approx(.02, abs=1e-15)
    assert ew.at["H-L", "n"] == 4
    vw = decile_returns(df, dec, "ret", "vw").set_index("decile")
    # D1 VW (.01*1 + .03*3)/4 = .025; D10 (.06*1 + .02*3)/4 = .03; H-L = .005.
    assert vw.at["1", "ret"] == pytest.approx(.025, abs=1e-15)
    assert vw.at["10", "ret"] == pytest.approx(.03, abs=1e-15)
    assert vw.at["H-L", "ret"] == pytest.approx(.005, abs=1e-15)


def test_vw_skips_missing_cap_and_hl_needs_both_legs():
    df = _twenty()
    df.loc[1, "mktcap"] = np.nan  # D1 VW keeps only stock 0 -> .01
    dec, _ = assign_deciles(df, "s")
    vw = decile_returns(df, dec, "ret", "vw").set_index("decile")
    assert vw.at["1", "ret"] == pytest.approx(.01, abs=1e-15)
    assert vw.at["H-L", "ret"] == pytest.approx(.03 - .01, abs=1e-15)
    # The tie example has an empty D10 -> no H-L row for that date.
    x = [.1, .2, .2, .2, .5, .6, .7, .8, .9, 1.0, 1.0]
    t = _one_date(x, ret=np.full(11, .01), mktcap=np.ones(11))
    dec, _ = assign_deciles(t, "s")
    assert "H-L" not in decile_returns(t, dec, "ret", "ew")["decile"].tolist()


def test_performance_annualised_by_hand():
    # Monthly H-L returns .01, .03, -.01, .05: mean .02; deviations -.01, .01, -.03, .03;
    # var(ddof=1) = (1 + 1 + 9 + 9)e-4 / 3 = 2/3000. K = 12: ann_ret = .24,
    # ann_vol = sqrt(12 * 2/3000) = sqrt(.008), SR = .24 / sqrt(.008) = sqrt(7.2),
    # t = .02 / (sqrt(2/3000) / 2) = .04 * sqrt(1500) = sqrt(2.4).
    r = pd.DataFrame({"decile": "H-L", "ret": [.01, .03, -.01, .05]})
    p = performance(r, "month").loc["H-L"]
    assert p["n_periods"] == 4
    assert p["ann_ret"] == pytest.approx(.24, rel=1e-12)
    assert p["ann_vol"] == pytest.approx(math.sqrt(.008), rel=1e-12)
    assert p["sharpe"] == pytest.approx(math.sqrt(7.2), rel=1e-12)
    assert p["t_stat"] == pytest.approx(math.sqrt(2.4), rel=1e-12)
    # Weekly: K = 52 -> ann_ret = .02 * 52 = 1.04, SR = .02/sqrt(2/3000) * sqrt(52).
    pw = performance(r, "week").loc["H-L"]
    assert pw["ann_ret"] == pytest.approx(1.04, rel=1e-12)
    assert pw["sharpe"] == pytest.approx(.02 / math.sqrt(2 / 3000) * math.sqrt(52), rel=1e-12)
    assert C.stars(math.sqrt(2.4)) == ""  # 1.549 < 1.645
    assert C.stars(2.0) == "**" and C.stars(-2.6) == "***" and C.stars(1.7) == "*"
    assert C.stars(1.3, one_sided=True) == "*" and C.stars(2.4, one_sided=True) == "***"


def _turnover_fixture():
    """Three monthly dates, 10 stocks each (one per decile), stocks named 0..9 = A..J.

    t0: D1 = A(0), D10 = J(9); returns t0->t1: A +10%, J -10%.
    t1: D1 = A(0), D10 = B(1); returns t1->t2: A 0%, B +20%.
    t2: D1 = C(2), D10 = B(1).
    """
    dates = pd.to_datetime(["2001-01-31", "2001-02-28", "2001-03-30"])
    rows = []
    orders = [list(range(10)),  # signal rank = stock id: A lowest, J highest
              [0, 2, 3, 4, 5, 6, 7, 8, 9, 1],  # A lowest, B highest
              [2, 0, 3, 4, 5, 6, 7, 8, 9, 1]]  # C lowest, B highest
    rets = [{0: .10, 9: -.10}, {0: 0.0, 1: .20}, {}]
    for t, (d, order) in enumerate(zip(dates, orders, strict=True)):
        for rank, sid in enumerate(order):
            rows.append({"stock_id": sid, "date": d, "s": float(rank),
                         "ret": rets[t].get(sid, 0.01), "mktcap": 1.0 + sid})
    return pd.DataFrame(rows)


def test_turnover_worked_example():
    df = _turnover_fixture()
    dec, _ = assign_deciles(df, "s")
    to = hl_turnover(df, dec, "ret", "ew")
    # TO_1: w_t0 = {J: +1, A: -1}; 1 + sum w r = 1 + (-.1) + (-1)(.1) = .8; drifted J = .9/.8 =
    # 1.125, A = -1.1/.8 = -1.375. w_t1 = {B: +1, A: -1}. |A: -1 + 1.375| = .375, |B: 1 - 0| = 1,
    # |J: 0 - 1.125| = 1.125 -> sum 2.5, TO = 1.25.
    # TO_2: w_t1 = {B: +1, A: -1}; 1 + .2 - 0 = 1.2; drifted B = 1.2/1.2 = 1, A = -1/1.2 = -5/6.
    # w_t2 = {B: +1, C: -1}: |B| = 0, |A| = 5/6, |C| = 1 -> sum 11/6, TO = 11/12.
    assert np.isnan(to["turnover"].iat[0])
    assert to["turnover"].iat[1] == pytest.approx(1.25, abs=1e-12)
    assert to["turnover"].iat[2] == pytest.approx(11 / 12, abs=1e-12)
    # Mean (1.25 + 11/12)/2 = 13/12 -> monthly x1 -> 108.33%; weekly x4 -> 433.33%; /3 quarterly.
    assert monthly_turnover_pct(to["turnover"], "month") == pytest.approx(1300 / 12, rel=1e-12)
    assert monthly_turnover_pct(to["turnover"], "week") == pytest.approx(5200 / 12, rel=1e-12)
    assert monthly_turnover_pct(to["turnover"], "quarter") == pytest.approx(1300 / 36, rel=1e-12)


def test_turnover_vw_and_weights():
    df = _turnover_fixture()
    dec, _ = assign_deciles(df, "s")
    w = hl_weights(df, dec, "vw")
    # One stock per leg: VW weights are +1/-1 whatever the cap.
    assert sorted(w.groupby("date")["w"].sum().round(12).tolist()) == [0.0, 0.0, 0.0]
    to_vw = hl_turnover(df, dec, "ret", "vw")
    assert to_vw["turnover"].iat[1] == pytest.approx(1.25, abs=1e-12)
    # A skipped middle date makes both its own and the next turnover undefined.
    df2 = df.copy()
    df2.loc[df2["date"] == pd.Timestamp("2001-02-28"), "s"] = 1.0
    dec2, _ = assign_deciles(df2, "s")
    assert np.isnan(hl_turnover(df2, dec2, "ret", "ew")["turnover"]).all()


def test_evaluate_signal_end_to_end_small():
    df = _turnover_fixture()
    ev = evaluate_signal(df, "s", "ret", "month", min_stocks=10)
    hl = ev.returns[(ev.returns["weighting"] == "ew") & (ev.returns["decile"] == "H-L")]
    # H-L per date: t0 J - A = -.10 - .10 = -.20; t1 B - A = .20 - 0 = .20; t2 B - C = .01 - .01 = 0.
    np.testing.assert_allclose(hl["ret"].to_numpy(), [-.2, .2, 0.0], atol=1e-15)
    assert ev.turnover_monthly_pct["ew"] == pytest.approx(1300 / 12, rel=1e-12)
    assert ev.n_rows == 30 and ev.info["n_dates_sorted"] == 3
    # mean 0 -> annualised H-L mean 0; sd = .2 -> SR 0.
    assert ev.performance.loc[("ew", "H-L"), "ann_ret"] == pytest.approx(0.0, abs=1e-15)


def test_conventions_text_mentions_proxy():
    t = C.conventions_text("week", True, ["ew", "vw"])
    assert C.PROXY_LABEL in t and "x 52" in t and "x4" in t
    assert C.PROXY_LABEL not in C.conventions_text("month", False)
    assert [C.decile_label(d) for d in (1, 2, 10, "H-L")] == ["Low", "2", "High", "H-L"]
    assert C.frequency_of_horizon(60) == "quarter" and C.periods_per_year("quarter") == 4
