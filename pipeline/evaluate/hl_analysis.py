"""The long-short (H-L) portfolio beyond its mean: net of trading costs, its two legs, its drawdown
and its statistics per calendar year (docs/method.md section 7; rules in pipeline.evaluate.conventions).

    series_stats(ret, freq) -> dict                      annualised mean, vol, Sharpe, t, Newey-West t
    net_of_cost(gross, turnover, cost_bps) -> DataFrame  per date: gross, turnover, cost, net
    net_of_cost_summary(net, freq, cost_bps) -> dict     net return, net Sharpe, break-even cost
    leg_summary(perf, weighting) -> dict                 the long (High) and short (Low) deciles
    cumulative_return(ret) -> Series                     running sum of per-period returns
    max_drawdown(ret) -> dict                            largest fall of that sum, peak/trough dates
    by_year_performance(returns, freq) -> DataFrame      H-L statistics per calendar year
    by_year_dict(table) -> dict                          the same, JSON-ready

Every function is pure: it takes per-period returns (decimal, one value per rebalance date) and
returns numbers; tables and figures consume them. Dates in the returned dicts are ISO strings
('YYYY-MM-DD') so that metrics.json reads back equal to what was written.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.evaluate.conventions import (BP, COST_PER_TURNOVER, ESTABLISH_TURNOVER, HL, N_DECILES,
                                           periods_per_year)
from pipeline.evaluate.portfolios import performance
from pipeline.evaluate.statistics import newey_west_t

NAN = float("nan")


def series_stats(ret: pd.Series | np.ndarray, freq: str) -> dict:
    """Statistics of one per-period return series, by the rules of :func:`portfolios.performance`.

    Args:
        ret: per-period returns (decimal) in date order; NaN periods are dropped.
    Returns:
        {"n_periods", "mean" (per period), "ann_ret" (mean x K), "ann_vol" (sd(ddof=1) x sqrt(K)),
        "sharpe" (ann_ret / ann_vol), "t" (mean / (sd / sqrt(T))), "t_nw" (Newey-West)}; NaN where
        undefined (fewer than two periods, zero variance).
    """
    x = np.asarray(ret, dtype=np.float64)
    x = x[np.isfinite(x)]
    k = periods_per_year(freq)
    n = len(x)
    mean = float(x.mean()) if n else NAN
    sd = float(x.std(ddof=1)) if n > 1 else NAN
    ok = n > 1 and sd > 0
    return {"n_periods": int(n), "mean": mean, "ann_ret": mean * k,
            "ann_vol": sd * math.sqrt(k) if n > 1 else NAN,
            "sharpe": mean * k / (sd * math.sqrt(k)) if ok else NAN,
            "t": mean / (sd / math.sqrt(n)) if ok else NAN,
            "t_nw": newey_west_t(x)}


# --------------------------------------------------------------------------------------------------
# Net of trading costs


def net_of_cost(gross: pd.Series, turnover: pd.Series, cost_bps: float) -> pd.DataFrame:
    """Per-period H-L return net of trading costs (conventions: cost_t = c x TO_t).

    Args:
        gross: H-L return per rebalance date (decimal, per period), indexed by formation date.
        turnover: TO_t of the same portfolio per rebalance date (fraction, 0..2; NaN where
            undefined), indexed by date; the trade at date t forms the portfolio whose return is
            ``gross`` at t, so the two are matched on the same date.
        cost_bps: cost per side in basis points (>= 0).
    Returns:
        DataFrame indexed by the dates of ``gross`` (sorted, NaN returns dropped), columns gross,
        turnover (as measured, NaN where undefined), turnover_charged (turnover, or
        ESTABLISH_TURNOVER = 1.0 where undefined: the position is built from nothing), cost
        (= COST_PER_TURNOVER x cost_bps x 1e-4 x turnover_charged) and net (= gross - cost); all
        decimal per period except the turnovers (fractions per rebalance).
    """
    if not (cost_bps >= 0 and math.isfinite(cost_bps)):
        raise ValueError(f"cost_bps is {cost_bps!r}; use a finite cost >= 0")
    g = gross.dropna().sort_index().astype(np.float64)
    to = turnover.reindex(g.index).astype(np.float64)
    charged = to.fillna(ESTABLISH_TURNOVER)
    cost = COST_PER_TURNOVER * cost_bps * BP * charged
    out = pd.DataFrame({"gross": g, "turnover": to, "turnover_charged": charged, "cost": cost,
                        "net": g - cost})
    out.index.name = "date"
    return out


def net_of_cost_summary(net: pd.DataFrame, freq: str, cost_bps: float) -> dict:
    """Net-of-cost statistics of one weighting's H-L portfolio.

    Args:
        net: from :func:`net_of_cost`.
    Returns:
        {"cost_bps", "n_periods", "n_periods_established" (charged ESTABLISH_TURNOVER: no measured
        turnover), "mean_turnover" (mean charged turnover, fraction per rebalance), "cost_ann" (mean
        cost x K, decimal), "gross_ann_ret", "gross_sharpe", "net_ann_ret", "net_ann_vol",
        "net_sharpe", "net_t", "net_t_nw", "break_even_bps" (mean gross / (COST_PER_TURNOVER x mean
        charged turnover) x 1e4, bp per side; negative when the gross mean is; NaN when the mean
        turnover is 0)}.
    """
    k = periods_per_year(freq)
    n = len(net)
    gs = series_stats(net["gross"], freq)
    ns = series_stats(net["net"], freq)
    mean_to = float(net["turnover_charged"].mean()) if n else NAN
    be = gs["mean"] / (COST_PER_TURNOVER * mean_to) / BP if n and mean_to > 0 else NAN
    return {"cost_bps": float(cost_bps), "n_periods": int(n),
            "n_periods_established": int(net["turnover"].isna().sum()),
            "mean_turnover": mean_to, "cost_ann": float(net["cost"].mean()) * k if n else NAN,
            "gross_ann_ret": gs["ann_ret"], "gross_sharpe": gs["sharpe"],
            "net_ann_ret": ns["ann_ret"], "net_ann_vol": ns["ann_vol"], "net_sharpe": ns["sharpe"],
            "net_t": ns["t"], "net_t_nw": ns["t_nw"], "break_even_bps": float(be)}


# --------------------------------------------------------------------------------------------------
# Legs


def leg_summary(perf: pd.DataFrame, weighting: str) -> dict:
    """The two legs of the H-L portfolio of one weighting, each as a portfolio held long.

    Args:
        perf: from :func:`portfolios.performance`, index (weighting, decile str).
    Returns:
        {"long": {...}, "short": {...}}: long = decile 10 (High), short = decile 1 (Low); each with
        decile, ann_ret, ann_vol, sharpe, t, t_nw (the decile portfolio's own return: the H-L earns
        long minus short) and n_periods.
    """
    out = {}
    for leg, dec in (("long", str(N_DECILES)), ("short", "1")):
        try:
            row = perf.loc[(weighting, dec)]
        except KeyError:
            row = pd.Series(dtype=float)
        out[leg] = {"decile": int(dec),
                    **{key: float(row.get(col, NAN)) for key, col in (
                        ("ann_ret", "ann_ret"), ("ann_vol", "ann_vol"), ("sharpe", "sharpe"),
                        ("t", "t_stat"), ("t_nw", "t_nw"))},
                    "n_periods": int(row.get("n_periods", 0))}
    return out


# --------------------------------------------------------------------------------------------------
# Cumulative return and drawdown


def cumulative_return(ret: pd.Series) -> pd.Series:
    """Cumulative H-L return, the running SUM of per-period returns (conventions: not compounded).

    Args:
        ret: per-period returns (decimal) indexed by formation date; NaN periods are dropped.
    Returns:
        Series on the sorted dates: the value at date t includes the return of the period formed at t.
    """
    return ret.dropna().sort_index().cumsum()


def _iso(d) -> str:  # noqa: ANN001
    return pd.Timestamp(d).date().isoformat()


def max_drawdown(ret: pd.Series) -> dict:
    """Largest fall of the cumulative (summed) return from its running peak.

    The running peak starts at 0 (before the first period), so a series that falls from the start
    has its peak at the start. Dates name the formation date of the period whose return ends at the
    peak / trough (as in the cumulative plot).

    Args:
        ret: per-period returns (decimal) indexed by formation date.
    Returns:
        {"max_drawdown" (>= 0, decimal of summed return; 0.0 when the sum never falls),
        "peak_date" (None when the peak is the start or there is no drawdown), "trough_date",
        "recovery_date" (first date after the trough at which the sum is back at the peak; None if
        never), "peak_value", "trough_value" (cumulative sums), "periods_peak_to_trough",
        "n_periods"}.
    """
    c = cumulative_return(ret)
    out = {"max_drawdown": 0.0 if len(c) else NAN, "peak_date": None, "trough_date": None,
           "recovery_date": None, "peak_value": NAN, "trough_value": NAN,
           "periods_peak_to_trough": 0, "n_periods": int(len(c))}
    if c.empty:
        return out
    v = c.to_numpy()
    peak = np.maximum.accumulate(np.maximum(v, 0.0))
    dd = peak - v
    j = int(np.argmax(dd))  # first trough of the largest drawdown
    if dd[j] <= 0:
        return out
    # The peak is the last period at or before j whose sum equals the running peak; none -> start.
    at_peak = np.flatnonzero(v[: j + 1] >= peak[j])
    i = int(at_peak[-1]) if len(at_peak) else -1
    later = np.flatnonzero(v[j + 1:] >= peak[j])
    dates = c.index
    out.update({"max_drawdown": float(dd[j]), "peak_date": _iso(dates[i]) if i >= 0 else None,
                "trough_date": _iso(dates[j]),
                "recovery_date": _iso(dates[j + 1 + int(later[0])]) if len(later) else None,
                "peak_value": float(peak[j]), "trough_value": float(v[j]),
                "periods_peak_to_trough": int(j - i)})
    return out


# --------------------------------------------------------------------------------------------------
# Per calendar year


def by_year_performance(returns: pd.DataFrame, freq: str) -> pd.DataFrame:
    """H-L statistics per weighting and calendar year of the formation date.

    Args:
        returns: long table with date, weighting, decile, ret (as ``SignalEvaluation.returns``);
            only the H-L rows are used.
    Returns:
        DataFrame indexed by (weighting, year) (sorted) with n_periods, mean (per period), ann_ret
        (mean x K), ann_vol, sharpe, t_stat, t_nw of that year's periods (by the rules of
        :func:`portfolios.performance`; K is the full-year K even for a partial year).
    """
    hl = returns[returns["decile"] == HL]
    hl = hl.assign(year=pd.to_datetime(hl["date"]).dt.year.astype(np.int64))
    perf = performance(hl, freq, by=("weighting", "year"))
    return perf.sort_index()


def by_year_dict(table: pd.DataFrame) -> dict:
    """{weighting: {"YYYY": {n_periods, ann_ret, ann_vol, sharpe, t, t_nw}}} from
    :func:`by_year_performance` (string year keys: JSON objects have string keys)."""
    out: dict = {}
    for (w, year), r in table.iterrows():
        out.setdefault(str(w), {})[str(int(year))] = {
            "n_periods": int(r["n_periods"]), "ann_ret": float(r["ann_ret"]),
            "ann_vol": float(r["ann_vol"]), "sharpe": float(r["sharpe"]),
            "t": float(r["t_stat"]), "t_nw": float(r["t_nw"])}
    return out
