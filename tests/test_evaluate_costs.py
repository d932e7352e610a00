"""The H-L portfolio beyond its mean, on hand-computed fixtures: net of trading costs and the
break-even cost, its legs, the drawdown of its summed return, the per-year split, the per-date
information coefficient, their tables and figure, and what evaluate_run writes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError, load_config
from pipeline.evaluate import conventions as C
from pipeline.evaluate.core import evaluate_run
from pipeline.evaluate.hl_analysis import (by_year_dict, by_year_performance, cumulative_return,
                                           leg_summary, max_drawdown, net_of_cost, net_of_cost_summary,
                                           series_stats)
from pipeline.evaluate.metrics import correlations_by_date, ic_by_date, ic_summary
from pipeline.evaluate.plots import ic_bars
from pipeline.evaluate.portfolios import performance
from pipeline.evaluate.statistics import newey_west_t
from pipeline.evaluate.tables import (NET_ROW_LABELS, by_year_table, format_by_year_table,
                                      format_net_of_cost_table, net_of_cost_table)

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_core import _experiment  # noqa: E402


def _months(n: int, start: str = "2001-01-31") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="ME")


# --------------------------------------------------------------------------------------------------
# Conventions and config


def test_cost_convention_is_cost_per_side_times_turnover():
    # The rule, stated once: cost_t = 2 x cost_bps x 1e-4 x TO_t (per side: the dollars traded are
    # sum |dw| = 2 TO_t); a new position counts TO = 1.
    assert C.COST_PER_TURNOVER == 2.0 and C.BP == 1e-4 and C.ESTABLISH_TURNOVER == 1.0
    assert "running SUM" in C.__doc__ and "break-even" in C.__doc__.lower()
    assert "2 x 10 bp x turnover" in C.cost_text(10.0)


def test_cost_bps_config_default_override_and_refusals():
    assert load_config(None, []).evaluate.cost_bps == 10.0
    assert load_config(None, ["evaluate.cost_bps=25"]).evaluate.cost_bps == 25.0
    assert load_config(None, ["evaluate.cost_bps=0"]).evaluate.cost_bps == 0.0
    with pytest.raises(ConfigError, match="evaluate.cost_bps"):
        load_config(None, ["evaluate.cost_bps=-1"])
    with pytest.raises(ConfigError, match="evaluate.cost_bps"):
        load_config(None, ["evaluate.cost_bps=.nan"])
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["evaluate.cost_bps=cheap"])
    with pytest.raises(ConfigError):  # unknown keys stay errors
        load_config(None, ["evaluate.cost_bp=10"])


# --------------------------------------------------------------------------------------------------
# Net of cost


def test_constant_turnover_one_costs_ten_bp_per_period():
    d = _months(5)
    gross = pd.Series([0.02, -0.01, 0.03, 0.0, 0.015], index=d)
    to = pd.Series([np.nan, 1.0, 1.0, 1.0, 1.0], index=d)  # the first date has no measured TO
    net = net_of_cost(gross, to, 10.0)
    # 2 x 10 bp x 1.0 = 0.002 every period; the first period builds the position: TO charged 1.0.
    np.testing.assert_allclose(net["net"].to_numpy(), gross.to_numpy() - 0.002, rtol=0, atol=1e-15)
    np.testing.assert_allclose(net["cost"].to_numpy(), 0.002, rtol=0, atol=1e-15)
    assert net["turnover"].isna().tolist() == [True, False, False, False, False]
    assert (net["turnover_charged"] == 1.0).all()
    # Full replacement of both legs (TO = 2.0) costs twice as much; zero cost changes nothing.
    net2 = net_of_cost(gross, to.fillna(2.0) * 0 + 2.0, 10.0)
    np.testing.assert_allclose(net2["net"].to_numpy(), gross.to_numpy() - 0.004, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(net_of_cost(gross, to, 0.0)["net"].to_numpy(), gross.to_numpy())
    with pytest.raises(ValueError, match="cost_bps"):
        net_of_cost(gross, to, -5.0)


def test_net_summary_by_hand_and_break_even():
    d = _months(4)
    gross = pd.Series([0.02, 0.00, 0.01, -0.01], index=d)
    to = pd.Series([1.0, 1.0, 1.0, 1.0], index=d)
    s = net_of_cost_summary(net_of_cost(gross, to, 50.0), "month", 50.0)
    # net = gross - 2 x 50 bp = gross - 0.01 = [.01, -.01, 0, -.02]: mean -.005, sd(ddof=1) = sqrt(5e-4 / 3).
    sd = math.sqrt(5e-4 / 3)
    assert s["n_periods"] == 4 and s["n_periods_established"] == 0
    assert s["net_ann_ret"] == pytest.approx(-0.06)
    assert s["net_ann_vol"] == pytest.approx(sd * math.sqrt(12))
    assert s["net_sharpe"] == pytest.approx(-0.005 / sd * math.sqrt(12))
    assert s["net_t"] == pytest.approx(-0.005 / (sd / 2))
    assert s["gross_ann_ret"] == pytest.approx(0.06) and s["cost_ann"] == pytest.approx(0.12)
    # Break-even = mean gross / (2 mean turnover) = 0.005 / 2.0 = 25 bp per side.
    assert s["break_even_bps"] == pytest.approx(25.0)


def test_break_even_is_mean_gross_over_mean_turnover_and_zeroes_the_net_mean():
    rng = np.random.default_rng(0)
    d = _months(60)
    gross = pd.Series(rng.normal(0.01, 0.03, 60), index=d)
    to = pd.Series(rng.uniform(0.5, 2.0, 60), index=d)
    s = net_of_cost_summary(net_of_cost(gross, to, 10.0), "month", 10.0)
    be = gross.mean() / (2 * to.mean()) * 1e4
    assert s["break_even_bps"] == pytest.approx(be)
    at_be = net_of_cost(gross, to, s["break_even_bps"])
    assert abs(at_be["net"].mean()) < 1e-15
    # Gross figures are those of the whole series (same periods as the net ones).
    assert s["gross_sharpe"] == pytest.approx(series_stats(gross, "month")["sharpe"])
    # No turnover at all -> no break-even; a losing strategy has a negative one.
    assert math.isnan(net_of_cost_summary(net_of_cost(gross, to * 0, 10.0), "month", 10.0)
                      ["break_even_bps"])
    assert net_of_cost_summary(net_of_cost(-gross, to, 10.0), "month", 10.0)["break_even_bps"] < 0


def test_series_stats_follow_performance():
    rng = np.random.default_rng(1)
    d = _months(30)
    r = pd.DataFrame({"date": d, "g": "x", "ret": rng.normal(0.01, 0.05, 30)})
    p = performance(r, "month", by=("g",)).loc["x"]
    s = series_stats(r["ret"], "month")
    for a, b in (("ann_ret", "ann_ret"), ("ann_vol", "ann_vol"), ("sharpe", "sharpe"), ("t", "t_stat"),
                 ("t_nw", "t_nw")):
        assert s[a] == pytest.approx(p[b])
    assert math.isnan(series_stats([0.01], "week")["sharpe"])


# --------------------------------------------------------------------------------------------------
# Legs


def test_leg_summary_reads_deciles_ten_and_one():
    idx = pd.MultiIndex.from_tuples([("ew", "1"), ("ew", "10"), ("ew", "H-L")],
                                    names=["weighting", "decile"])
    perf = pd.DataFrame({"n_periods": [5, 5, 5], "ann_ret": [-0.1, 0.2, 0.3],
                         "ann_vol": [0.2, 0.25, 0.1], "sharpe": [-0.5, 0.8, 3.0],
                         "t_stat": [-1.0, 1.5, 4.0], "t_nw": [-0.9, 1.4, 3.5]}, index=idx)
    legs = leg_summary(perf, "ew")
    assert legs["long"] == {"decile": 10, "ann_ret": 0.2, "ann_vol": 0.25, "sharpe": 0.8, "t": 1.5,
                            "t_nw": 1.4, "n_periods": 5}
    assert legs["short"]["decile"] == 1 and legs["short"]["ann_ret"] == -0.1
    assert math.isnan(leg_summary(perf, "vw")["long"]["ann_ret"])


# --------------------------------------------------------------------------------------------------
# Cumulative return and drawdown


def test_cumulative_return_is_summed_not_compounded():
    c = cumulative_return(pd.Series([0.1, np.nan, 0.1], index=_months(3)))
    np.testing.assert_allclose(c.to_numpy(), [0.1, 0.2])  # compounding would give 0.21


def test_max_drawdown_of_a_known_series():
    d = _months(5)
    # Sums: .1, .05, -.05, .15, -.15; running peak .1, .1, .1, .15, .15 -> largest fall .30 from
    # the 4th period (peak .15) to the 5th (trough -.15), never recovered.
    dd = max_drawdown(pd.Series([0.1, -0.05, -0.1, 0.2, -0.3], index=d))
    assert dd["max_drawdown"] == pytest.approx(0.30)
    assert dd["peak_date"] == "2001-04-30" and dd["trough_date"] == "2001-05-31"
    assert dd["recovery_date"] is None and dd["periods_peak_to_trough"] == 1
    assert dd["peak_value"] == pytest.approx(0.15) and dd["trough_value"] == pytest.approx(-0.15)
    # Falling from the start: the peak is the start (0), the trough the 2nd period, and the sum is
    # back above 0 at the 3rd.
    dd = max_drawdown(pd.Series([-0.1, -0.1, 0.3], index=_months(3)))
    assert dd["max_drawdown"] == pytest.approx(0.2) and dd["peak_date"] is None
    assert dd["trough_date"] == "2001-02-28" and dd["recovery_date"] == "2001-03-31"
    assert dd["periods_peak_to_trough"] == 2
    # A sum that never falls has no drawdown.
    dd = max_drawdown(pd.Series([0.01, 0.0, 0.02], index=_months(3)))
    assert dd["max_drawdown"] == 0.0 and dd["trough_date"] is None


# --------------------------------------------------------------------------------------------------
# Per calendar year


def test_by_year_split_of_a_known_series():
    d = _months(8, "2001-09-30")  # Sep..Dec 2001 (4 periods), Jan..Apr 2002 (4 periods)
    hl = [0.01, 0.03, 0.02, 0.06, -0.01, 0.01, 0.00, 0.04]
    rows = pd.concat([
        pd.DataFrame({"date": d, "weighting": "ew", "decile": "H-L", "ret": hl}),
        pd.DataFrame({"date": d, "weighting": "ew", "decile": "10", "ret": 9.0}),  # ignored
    ], ignore_index=True)
    tab = by_year_performance(rows, "month")
    assert list(tab.index) == [("ew", 2001), ("ew", 2002)]
    y1 = tab.loc[("ew", 2001)]
    # 2001: mean .03, sd(ddof=1) = sqrt((.0004+0+.0001+.0009)/3) = sqrt(.0014/3).
    sd = math.sqrt(0.0014 / 3)
    assert y1["n_periods"] == 4 and y1["ann_ret"] == pytest.approx(0.36)
    assert y1["sharpe"] == pytest.approx(0.03 / sd * math.sqrt(12))
    assert y1["t_stat"] == pytest.approx(0.03 / (sd / 2))
    assert y1["t_nw"] == pytest.approx(newey_west_t(np.array(hl[:4])))
    assert tab.loc[("ew", 2002), "ann_ret"] == pytest.approx(0.01 * 12)
    j = by_year_dict(tab)
    assert set(j["ew"]) == {"2001", "2002"} and j["ew"]["2002"]["n_periods"] == 4
    assert j["ew"]["2001"]["t"] == pytest.approx(y1["t_stat"])
    num = by_year_table(tab, False, ["ew"])
    assert list(num.index) == [2001, 2002]
    assert list(num.columns) == ["EW ret", "EW SR", "EW t", "EW NW t", "EW n"]
    fmt = format_by_year_table(num)
    assert fmt.at[2001, "EW ret"] == "0.360***" and fmt.at[2001, "EW n"] == "4"


# --------------------------------------------------------------------------------------------------
# Information coefficient


def _panel_for_ic():
    d1, d2, d3 = _months(3)
    sig = [1.0, 2.0, 3.0, 4.0]
    return pd.DataFrame({
        "date": [d1] * 4 + [d2] * 4 + [d3] * 4,
        "p_up": sig * 3,
        # d1 perfectly ranked; d2 reversed; d3 ranks 1, 3, 2, 4 -> 1 - 6 * 2 / (4 * 15) = 0.8.
        "ret": [-0.2, 0.0, 0.1, 0.5] + [0.4, 0.3, 0.2, 0.1] + [0.1, 0.3, 0.2, 0.4],
    })


def test_ic_per_date_by_hand():
    ic = ic_by_date(correlations_by_date(_panel_for_ic(), "p_up", "ret"))
    assert list(ic.columns) == ["date", "ic", "n"]
    np.testing.assert_allclose(ic["ic"].to_numpy(), [1.0, -1.0, 0.8])
    assert ic["n"].tolist() == [4, 4, 4]
    s = ic_summary(ic)
    mean = 0.8 / 3
    sd = math.sqrt(((1 - mean) ** 2 + (-1 - mean) ** 2 + (0.8 - mean) ** 2) / 2)
    assert s["mean"] == pytest.approx(mean) and s["sd"] == pytest.approx(sd)
    assert s["t"] == pytest.approx(mean / (sd / math.sqrt(3)))
    assert s["n_dates"] == 3 and s["n_dates_undefined"] == 0 and s["mean_n_stocks"] == 4.0


def test_ic_of_a_perfectly_ranked_signal_is_one():
    df = _panel_for_ic()
    df["p_up"] = df["ret"] * 0.5 + 0.5  # a monotone function of the return on every date
    ic = ic_by_date(correlations_by_date(df, "p_up", "ret"))
    np.testing.assert_allclose(ic["ic"].to_numpy(), 1.0)
    s = ic_summary(ic)
    assert s["mean"] == pytest.approx(1.0) and s["sd"] == pytest.approx(0.0, abs=1e-12)
    # Constant signal on one date -> undefined there, counted apart.
    df.loc[df["date"] == df["date"].iloc[0], "p_up"] = 0.5
    s = ic_summary(ic_by_date(correlations_by_date(df, "p_up", "ret")))
    assert s["n_dates"] == 2 and s["n_dates_undefined"] == 1


def test_ic_figure_bars_and_rolling_mean():
    rng = np.random.default_rng(2)
    ic = pd.DataFrame({"date": _months(30), "ic": rng.normal(0.05, 0.1, 30), "n": 100})
    ax = ic_bars(ic)
    assert len(ax.patches) == 30
    roll = [ln for ln in ax.lines if "rolling" in str(ln.get_label())][0]
    y = np.asarray(roll.get_ydata(), dtype=float)
    assert len(y) == 30 - C.IC_ROLLING_PERIODS + 1  # the line starts after 12 ICs
    assert y[0] == pytest.approx(ic["ic"].iloc[:12].mean())
    _, given = plt.subplots()
    assert ic_bars(ic, ax=given) is given
    plt.close("all")


# --------------------------------------------------------------------------------------------------
# Table


def test_net_of_cost_table_layout():
    net = {"ew": {"gross_ann_ret": 0.3, "net_ann_ret": 0.25, "net_t": 3.0, "break_even_bps": 42.25,
                  "cost_bps": 10.0, "n_periods": 100, "mean_turnover": 1.5}}
    legs = {"ew": {"long": {"ann_ret": 0.2, "sharpe": 1.0}, "short": {"ann_ret": -0.1, "sharpe": -0.5}}}
    dd = {"ew": {"max_drawdown": 0.12, "peak_date": "2003-01-31", "trough_date": None}}
    num = net_of_cost_table(net, legs, dd, True, ["ew"])
    assert list(num.index) == list(NET_ROW_LABELS.values()) and list(num.columns) == ["EW"]
    fmt = format_net_of_cost_table(num)
    assert fmt.at[NET_ROW_LABELS["net_ann_ret"], "EW"] == "0.250***"
    assert fmt.at[NET_ROW_LABELS["break_even_bps"], "EW"] == "42.2"
    assert fmt.at[NET_ROW_LABELS["peak_date"], "EW"] == "2003-01-31"
    assert fmt.at[NET_ROW_LABELS["trough_date"], "EW"] == ""
    assert fmt.at[NET_ROW_LABELS["n_periods"], "EW"] == "100"


# --------------------------------------------------------------------------------------------------
# The stage


def test_evaluate_run_writes_costs_legs_drawdown_by_year_and_ic(tmp_path):
    cfg, _ = _experiment(tmp_path, **{"evaluate.benchmarks": "[]", "evaluate.cost_bps": "25"})
    m = evaluate_run(cfg)
    out = paths.eval_dir(cfg)
    net = pd.read_parquet(out / "net_hl_by_date.parquet")
    assert list(net.columns) == ["date", "weighting", "gross", "turnover", "turnover_charged", "cost",
                                 "net"]
    port = pd.read_parquet(out / "portfolios.parquet")
    for w in ("ew", "vw"):
        n = m["net_of_cost"][w]
        assert n["cost_bps"] == 25.0 and n["n_periods"] == 23 and n["n_periods_established"] == 1
        nw = net[net["weighting"] == w].sort_values("date")
        np.testing.assert_allclose(nw["net"], nw["gross"] - 2 * 25e-4 * nw["turnover_charged"], atol=1e-15)
        # The gross series is the H-L of portfolios.parquet; its Sharpe is the decile table's.
        hl = port[(port.weighting == w) & (port.decile == "H-L")].sort_values("date")
        np.testing.assert_allclose(nw["gross"].to_numpy(), hl["ret"].to_numpy())
        assert n["gross_sharpe"] == pytest.approx(m[f"sharpe_{w}"])
        assert n["net_ann_ret"] == pytest.approx(12 * nw["net"].mean())
        assert n["net_ann_ret"] < n["gross_ann_ret"]
        assert n["break_even_bps"] == pytest.approx(
            nw["gross"].mean() / (2 * nw["turnover_charged"].mean()) * 1e4)
        # Turnover as measured is the stage's turnover series (NaN only on the first date).
        assert nw["turnover"].isna().tolist() == [True] + [False] * 22
        legs = m["legs"][w]
        assert legs["long"]["decile"] == 10 and legs["short"]["decile"] == 1
        # Both legs exist on every date here, so H-L = long - short exactly.
        assert legs["long"]["ann_ret"] - legs["short"]["ann_ret"] == pytest.approx(m[f"hl_ret_{w}"])
        dd = m["drawdown"][w]
        assert dd["max_drawdown"] >= 0 and dd["n_periods"] == 23
        years = m["by_year_hl"][w]
        assert set(years) == {"2002", "2003"}
        assert years["2002"]["n_periods"] == 12 and years["2003"]["n_periods"] == 11
    # Perfect sign knowledge -> the EW H-L sum never falls.
    assert m["drawdown"]["ew"]["max_drawdown"] == 0.0
    ic = pd.read_parquet(out / "ic_by_date.parquet")
    assert list(ic.columns) == ["date", "ic", "n"] and len(ic) == 23 and (ic["n"] == 30).all()
    assert m["ic"]["mean"] == pytest.approx(m["spearman"]) and m["ic"]["mean"] > 0.3
    assert m["ic"]["n_dates"] == 23 and m["ic"]["t_nw"] is not None
    assert (out / "figures" / "ic.png").stat().st_size > 1000
    by_year = pd.read_csv(out / "tables" / "hl_by_year.csv", comment="#", index_col=0)
    assert list(by_year.index) == [2002, 2003]
    assert by_year.at[2002, "EW SR"] == pytest.approx(m["by_year_hl"]["ew"]["2002"]["sharpe"], rel=1e-5)
    md = (out / "tables" / "net_of_cost.md").read_text()
    assert "Break-even cost (bp per side)" in md and "25 bp" in md
    # The cost is part of the settings: a new cost reruns the stage, zero cost -> net = gross.
    cfg0 = load_config(None, [f"data_dir={tmp_path}", "name=t", "evaluate.trend_history_days=250",
                              "evaluate.benchmarks=[]", "evaluate.cost_bps=0"])
    m0 = evaluate_run(cfg0)
    assert m0["net_of_cost"]["ew"]["net_ann_ret"] == pytest.approx(m0["hl_ret_ew"])
    assert m0["net_of_cost"]["ew"]["cost_bps"] == 0.0
