"""Decile portfolios, long-short returns, performance statistics and turnover (docs/method.md section 7).

One code path serves the CNN and every benchmark: give it a long table (one row per stock and
rebalance date) with a signal, the realised next-period return and the formation cap.

Conventions (decile numbering, annualisation, turnover scaling) come from
:mod:`pipeline.evaluate.conventions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.evaluate.statistics import newey_west_t
from pipeline.evaluate.conventions import (HL, MIN_STOCKS_PER_DATE, N_DECILES, TURNOVER_TO_MONTHLY,
                                           periods_per_year)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Decile assignment


def decile_breakpoints(df: pd.DataFrame, signal: str = "p_up", date: str = "date") -> pd.DataFrame:
    """Per-date 0th..100th percentiles (step 10) of ``signal`` with linear interpolation.

    Same rule as ``np.percentile(x, q, method='linear')``: with the date's n values sorted
    v_0 <= ... <= v_{n-1}, percentile q sits at h = (n-1) q / 100 and equals
    v_floor(h) + (h - floor(h)) (v_floor(h)+1 - v_floor(h)). Rows with a NaN signal are ignored.

    Returns:
        DataFrame indexed by date (sorted) with columns n and p0, p10, ..., p100 (float64).
    """
    x = df[signal].to_numpy(dtype=np.float64)
    d = df[date].to_numpy()
    ok = ~np.isnan(x)
    x, d = x[ok], d[ok]
    codes, uniques = pd.factorize(d, sort=True)
    order = np.lexsort((x, codes))
    xs = x[order]
    n = np.bincount(codes, minlength=len(uniques)).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    cols = {"n": n}
    for k in range(0, N_DECILES + 1):
        # (n-1)*k/10 in integer arithmetic first so exact positions stay exact.
        h = (n - 1) * k / N_DECILES
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        frac = h - lo
        vlo = xs[start + lo]
        vhi = xs[start + hi]
        cols[f"p{10 * k}"] = vlo + frac * (vhi - vlo)
    out = pd.DataFrame(cols, index=pd.Index(uniques, name=date))
    return out


def _decile_of(x: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The decile rule: 1 + #{k in 1..9 : b_k < x}, for values x (n,) and their breakpoints
    b_1..b_9, ``inner`` (n, 9) or (9,) for all. Returns int8 (n,) in 1..10."""
    return (1 + (x[:, None] > np.atleast_2d(inner)).sum(axis=1)).astype(np.int8)


def pooled_deciles(x: np.ndarray) -> np.ndarray:
    """Deciles 1..10 of all of ``x`` (n,) together: the per-date rule of :func:`assign_deciles`
    with every value on one date, and no date skipped (a sample, not a cross-section: used to group
    Grad-CAM maps). Raises ValueError on an empty array or a NaN. Returns int64 (n,)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.isnan(x).any():
        raise ValueError("pooled_deciles needs a non-empty array without NaN")
    bp = decile_breakpoints(pd.DataFrame({"x": x, "date": 0}), "x")
    inner = bp[[f"p{10 * k}" for k in range(1, N_DECILES)]].to_numpy()[0]
    return _decile_of(x, inner).astype(np.int64)


def assign_deciles(df: pd.DataFrame, signal: str = "p_up", date: str = "date",
                   min_stocks: int = MIN_STOCKS_PER_DATE) -> tuple[np.ndarray, pd.DataFrame]:
    """Sort each date's rows into deciles 1 (lowest signal) .. 10 (highest).

    Breakpoints b_k = the 10k-th percentile (:func:`decile_breakpoints`); D1 = [p0, p10],
    Dk = (p_{10(k-1)}, p_{10k}], i.e. decile = 1 + #{k in 1..9 : b_k < x}. A date is skipped
    (all its rows get decile 0) when it has fewer than ``min_stocks`` rows with a signal or when
    p10 == p90 (no spread to sort on). Rows with a NaN signal get 0.

    Args:
        df: long table, any index; columns ``date`` and ``signal``.
    Returns:
        (deciles, dates): int8 array (len(df),) with 0..10 aligned with ``df`` rows, and a per-date
        DataFrame (index date) with n, p0..p100 and ``skipped`` ('' | 'too_few_stocks' | 'p10_eq_p90').
    """
    bp = decile_breakpoints(df, signal, date)
    skipped = np.where(bp["n"].to_numpy() < min_stocks, "too_few_stocks",
                       np.where(bp["p10"].to_numpy() == bp["p90"].to_numpy(), "p10_eq_p90", ""))
    bp["skipped"] = skipped
    x = df[signal].to_numpy(dtype=np.float64)
    codes = bp.index.get_indexer(df[date].to_numpy())
    ok = ~np.isnan(x) & (codes >= 0)
    inner = bp[[f"p{10 * k}" for k in range(1, N_DECILES)]].to_numpy()  # (n_dates, 9)
    dec = np.zeros(len(df), dtype=np.int8)
    rows = np.flatnonzero(ok)
    # Row-wise comparison with its own date's 9 breakpoints; chunks bound the (rows, 9) temporary.
    chunk = 2_000_000
    for s in range(0, len(rows), chunk):
        r = rows[s:s + chunk]
        dec[r] = _decile_of(x[r], inner[codes[r]])
    dec[ok & (skipped[np.maximum(codes, 0)] != "")] = 0
    n_skip = int((skipped != "").sum())
    if n_skip:
        log.info("deciles on %s: skipped %d of %d dates (%s)", signal, n_skip, len(bp),
                 pd.Series(skipped[skipped != ""]).value_counts().to_dict())
    return dec, bp


# --------------------------------------------------------------------------------------------------
# Portfolio returns


def _vw_ok(cap: np.ndarray) -> np.ndarray:
    return np.isfinite(cap) & (cap > 0)


def _raw_weights(df: pd.DataFrame, weighting: str, cap: str) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised weights per row (1 for EW, the formation cap for VW) and which rows may hold one."""
    if weighting == "ew":
        return np.ones(len(df)), np.ones(len(df), dtype=bool)
    if weighting == "vw":
        w = df[cap].to_numpy(dtype=np.float64)
        return w, _vw_ok(w)
    raise ValueError(f"weighting {weighting!r}: choose 'ew' or 'vw'")


def decile_returns(df: pd.DataFrame, decile: np.ndarray, ret: str, weighting: str,
                   cap: str = "mktcap", date: str = "date") -> pd.DataFrame:
    """Per-date, per-decile portfolio return of one weighting, plus the H-L row.

    Args:
        df: long table with ``date``, ``ret`` (realised next-period return, no NaN expected in the
            rows with decile > 0) and, for VW, ``cap`` (formation cap).
        decile: int (len(df),) from :func:`assign_deciles`; 0 = not in any portfolio.
        weighting: 'ew' (1/n) or 'vw' (cap / sum cap; rows without a positive finite cap excluded).
    Returns:
        DataFrame columns date, decile (str '1'..'10' and 'H-L'), ret (float, per period), n (rows
        in the portfolio; for H-L the sum of D1 and D10). H-L = D10 - D1 only where both exist.
    """
    dec = np.asarray(decile)
    r = df[ret].to_numpy(dtype=np.float64)
    w, usable = _raw_weights(df, weighting, cap)
    keep = (dec > 0) & usable
    if np.isnan(r[keep]).any():
        i = int(np.flatnonzero(keep & np.isnan(r))[0])
        raise ValueError(f"missing return in column {ret!r} at row {i} of a sorted portfolio; "
                         "drop rows with missing returns before sorting")
    t = pd.DataFrame({"date": df[date].to_numpy()[keep], "decile": dec[keep],
                      "wr": (w * r)[keep], "w": w[keep]})
    g = t.groupby(["date", "decile"], sort=True)
    s = g[["wr", "w"]].sum()
    out = pd.DataFrame({"ret": s["wr"] / s["w"], "n": g.size()}).reset_index()
    wide = out.pivot(index="date", columns="decile", values="ret")
    nwide = out.pivot(index="date", columns="decile", values="n")
    hl = pd.DataFrame(columns=["date", "decile", "ret", "n"])
    if 1 in wide.columns and N_DECILES in wide.columns:
        hl_ret = (wide[N_DECILES] - wide[1]).dropna()
        hl = pd.DataFrame({"date": hl_ret.index, "decile": HL, "ret": hl_ret.to_numpy(),
                           "n": (nwide[N_DECILES] + nwide[1]).loc[hl_ret.index].to_numpy()})
    out["decile"] = out["decile"].astype(str)
    res = pd.concat([out, hl], ignore_index=True)
    res["n"] = res["n"].astype(np.int64)
    res["ret"] = res["ret"].astype(np.float64)
    return res


# --------------------------------------------------------------------------------------------------
# Performance statistics


def performance(returns: pd.DataFrame, freq: str, by: list[str] | tuple[str, ...] = ("decile",),
                value: str = "ret") -> pd.DataFrame:
    """Annualised mean, volatility, Sharpe ratio and t-stat of per-period returns per group.

    ann_ret = mean * K; ann_vol = sd(ddof=1) * sqrt(K); sharpe = ann_ret / ann_vol;
    t_stat = mean / (sd / sqrt(T)) with T = number of periods; K from the frequency;
    t_nw = the Newey-West t of the mean (pipeline.evaluate.statistics; periods in date order).

    Args:
        returns: long table with the ``by`` columns and ``value`` (per-period returns).
    Returns:
        DataFrame indexed by ``by`` with n_periods, mean, ann_ret, ann_vol, sharpe, t_stat, t_nw.
    """
    k = periods_per_year(freq)
    r = returns.dropna(subset=[value])
    if "date" in r.columns:  # the Newey-West t needs each group's periods in time order
        r = r.sort_values("date", kind="stable")
    g = r.groupby(list(by), sort=False)[value]
    m = g.mean()
    sd = g.std(ddof=1)
    n = g.count()
    out = pd.DataFrame({"n_periods": n.astype(np.int64), "mean": m, "ann_ret": m * k,
                        "ann_vol": sd * np.sqrt(k)})
    with np.errstate(divide="ignore", invalid="ignore"):
        out["sharpe"] = (out["ann_ret"] / out["ann_vol"]).where(out["ann_vol"] > 0)
        out["t_stat"] = (m / (sd / np.sqrt(n))).where(sd > 0)
    # One call per group (22 groups: deciles and H-L per weighting), each vectorised over periods.
    out["t_nw"] = g.agg(newey_west_t)
    return out


# --------------------------------------------------------------------------------------------------
# Turnover


def hl_weights(df: pd.DataFrame, decile: np.ndarray, weighting: str, cap: str = "mktcap",
               date: str = "date", stock: str = "stock_id") -> pd.DataFrame:
    """Signed H-L weights: +weight in D10 (summing to +1), -weight in D1 (summing to -1).

    Returns DataFrame columns stock, date, w, row (the row position in ``df``); other rows are 0.
    """
    dec = np.asarray(decile)
    base, usable = _raw_weights(df, weighting, cap)
    leg = ((dec == N_DECILES) | (dec == 1)) & usable
    rows = np.flatnonzero(leg)
    t = pd.DataFrame({stock: df[stock].to_numpy()[rows], date: df[date].to_numpy()[rows],
                      "leg": dec[rows], "b": base[rows], "row": rows})
    tot = t.groupby([date, "leg"])["b"].transform("sum")
    sign = np.where(t["leg"].to_numpy() == N_DECILES, 1.0, -1.0)
    t["w"] = sign * t["b"].to_numpy() / tot.to_numpy()
    return t[[stock, date, "w", "row"]]


def hl_turnover(df: pd.DataFrame, decile: np.ndarray, ret: str, weighting: str,
                cap: str = "mktcap", date: str = "date", stock: str = "stock_id",
                dates: np.ndarray | None = None) -> pd.DataFrame:
    """Per-rebalance turnover of the H-L portfolio (METHOD 7).

    TO_t = 1/2 sum_i | w_{i,t} - w_{i,t-1} (1 + r_{i,t}) / (1 + sum_j w_{j,t-1} r_{j,t}) |
    over the union of holdings at t-1 and t, where r_{i,t} is stock i's return from rebalance t-1
    to t (its ``ret`` on the row dated t-1; 0 if absent). Rebalance dates are ``dates`` (default:
    the sorted unique dates of ``df``); t-1 is the previous one. TO_t is NaN for the first date and
    whenever date t or t-1 has no complete H-L portfolio (a skipped date, or an empty leg).

    Returns:
        DataFrame columns date, turnover (fraction per rebalance; 2.0 = 200%).
    """
    w = hl_weights(df, decile, weighting, cap, date, stock)
    all_dates = np.sort(pd.unique(df[date].to_numpy())) if dates is None else np.asarray(dates)
    didx = pd.Index(all_dates)
    w["t"] = didx.get_indexer(w[date].to_numpy())
    if (w["t"] < 0).any():
        raise ValueError("hl_turnover: a holding date is not among the rebalance dates")
    r = df[ret].to_numpy(dtype=np.float64)[w["row"].to_numpy()]
    w["r"] = np.nan_to_num(r, nan=0.0)
    # A date is complete when both legs hold something (weights then sum to +1 and -1).
    legs = w.assign(long=w["w"] > 0).groupby("t")["long"].agg(["any", "all"])
    complete = np.zeros(len(all_dates), dtype=bool)
    complete[legs.index.to_numpy()] = (legs["any"] & ~legs["all"]).to_numpy()

    prev = pd.DataFrame({stock: w[stock].to_numpy(), "t": w["t"].to_numpy() + 1,
                         "wr": w["w"].to_numpy() * w["r"].to_numpy(),
                         "wg": w["w"].to_numpy() * (1.0 + w["r"].to_numpy())})
    prev = prev[prev["t"] < len(all_dates)]
    denom = 1.0 + prev.groupby("t")["wr"].transform("sum")
    prev["drift"] = prev["wg"] / denom
    cur = w[[stock, "t", "w"]]
    m = cur.merge(prev[[stock, "t", "drift"]], on=[stock, "t"], how="outer")
    m["absdiff"] = (m["w"].fillna(0.0) - m["drift"].fillna(0.0)).abs()
    to = 0.5 * m.groupby("t")["absdiff"].sum()
    out = np.full(len(all_dates), np.nan)
    out[to.index.to_numpy()] = to.to_numpy()
    valid = complete.copy()
    valid[1:] &= complete[:-1]
    if len(valid):
        valid[0] = False
    out[~valid] = np.nan
    return pd.DataFrame({"date": all_dates, "turnover": out})


def monthly_turnover_pct(turnover: pd.Series, freq: str) -> float:
    """Mean per-rebalance turnover (fraction) as a monthly figure in percent (x4 / x1 / /3)."""
    t = turnover.dropna()
    if t.empty:
        return float("nan")
    return float(t.mean() * TURNOVER_TO_MONTHLY[freq] * 100.0)


# --------------------------------------------------------------------------------------------------
# One signal, end to end


@dataclass
class SignalEvaluation:
    """Everything the portfolio stage knows about one signal on one sample."""

    returns: pd.DataFrame  # date, weighting, decile ('1'..'10', 'H-L'), ret, n
    performance: pd.DataFrame  # index (weighting, decile): n_periods, mean, ann_ret, ann_vol, sharpe, t_stat
    turnover: pd.DataFrame  # date, weighting, turnover (fraction per rebalance)
    turnover_monthly_pct: dict[str, float]  # weighting -> monthly turnover in percent
    dates: pd.DataFrame  # per date: n, p0..p100, skipped
    n_rows: int  # rows sorted (signal and return present)
    n_dropped: int = 0  # rows of the input without a signal or a return
    info: dict = field(default_factory=dict)


def evaluate_signal(df: pd.DataFrame, signal: str, ret: str, freq: str,
                    weights: tuple[str, ...] | list[str] = ("ew", "vw"), cap: str = "mktcap",
                    date: str = "date", stock: str = "stock_id",
                    min_stocks: int = MIN_STOCKS_PER_DATE) -> SignalEvaluation:
    """Sort ``df`` on ``signal`` into deciles per date; EW/VW returns, H-L, statistics, turnover.

    Rows with a missing ``signal`` or ``ret`` are dropped first (and counted), so the breakpoints
    are computed over exactly the stocks that are held.
    """
    need = [stock, date, signal, ret] + ([cap] if "vw" in weights else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"evaluate_signal: missing columns {missing}")
    keep = df[signal].notna() & df[ret].notna()
    d = df.loc[keep, list(dict.fromkeys(need))].reset_index(drop=True)
    dec, bp = assign_deciles(d, signal, date, min_stocks)
    parts, tos, to_pct = [], [], {}
    for wgt in weights:
        pr = decile_returns(d, dec, ret, wgt, cap, date)
        pr.insert(1, "weighting", wgt)
        parts.append(pr)
        to = hl_turnover(d, dec, ret, wgt, cap, date, stock, dates=bp.index.to_numpy())
        to.insert(1, "weighting", wgt)
        tos.append(to)
        to_pct[wgt] = monthly_turnover_pct(to["turnover"], freq)
    returns = pd.concat(parts, ignore_index=True)
    perf = performance(returns, freq, by=("weighting", "decile"))
    info = {"n_dates": int(len(bp)), "n_dates_skipped": int((bp["skipped"] != "").sum()),
            "n_dates_sorted": int((bp["skipped"] == "").sum())}
    return SignalEvaluation(returns=returns, performance=perf, turnover=pd.concat(tos, ignore_index=True),
                            turnover_monthly_pct=to_pct, dates=bp, n_rows=int((dec > 0).sum()),
                            n_dropped=int((~keep).sum()), info=info)
