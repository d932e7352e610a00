"""Benchmark signals from the canonical panel: MOM, STR, WSTR and TREND (docs/method.md section 7).

Every signal is oriented in its predictive direction (higher = expected better, so decile 10 is the
long leg), which is why STR and WSTR are *negated* past returns. Signals are computed at the rows
(stock_id, date) of a rebalance calendar and then evaluated by exactly the same portfolio code as
the CNN, on the same (stock, date) rows and realised returns.

Past returns count a stock's own valid-return records ("trading days"), as the paper's
``Ret_{k}d`` do (METHOD 3.1): with cl = cumulative sum of log(1 + ret) over the stock's records,
the return over records (i-k, i] is exp(cl_i - cl_{i-k}) - 1 and needs k earlier records.

- MOM  = return over months t-12..t-2 for monthly and quarterly rebalancing: from the stock's last
  record in the calendar month 12 months before the formation month to its last record in the month
  before it (the formation month itself is skipped); for weekly rebalancing the return over records
  (t-252, t-21]
- STR  = -(return over the last 21 records)
- WSTR = -(return over the last 5 records)
- TREND (Han, Zhou & Zhu 2016): A_L = mean of the last L adjusted closes / latest adjusted close,
  L in TREND_LAGS; each rebalance date a cross-sectional OLS (with intercept) of the return since the
  previous rebalance date on the previous date's A_L; forecast = sum_L beta_bar_L A_L with beta_bar
  the mean of the last K slopes (K = 52 weekly, 12 monthly, 12 quarterly) including the current
  one; needs at least ``history_days`` records (1000 by default).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pipeline.errors import InputError
from pipeline.images import windows


log = logging.getLogger(__name__)

BENCHMARKS = ("MOM", "STR", "WSTR", "TREND")
TREND_LAGS = (3, 5, 10, 20, 50, 100, 200, 400, 600, 800, 1000)
# Slopes averaged into the TREND forecast: HZZ's 12 months; 52 weeks and 12 quarters are project
# choices (METHOD 7).
TREND_SLOPE_WINDOW = {"week": 52, "month": 12, "quarter": 12}
MOM_SKIP, MOM_LOOKBACK, STR_DAYS, WSTR_DAYS = 21, 252, 21, 5

def period_ends(dates: np.ndarray | pd.Series | pd.DatetimeIndex, freq: str) -> pd.DatetimeIndex:
    """Last trading day of each calendar week (Mon-Sun), month or quarter among ``dates``, the
    final period's included even when incomplete (``pipeline.images.windows.period_ends``)."""
    return pd.DatetimeIndex(windows.period_ends(np.asarray(dates), freq, complete_only=False))


def _stock_positions(stock: np.ndarray) -> np.ndarray:
    """Position of each row within its stock's block (0 for the first record); rows sorted by stock."""
    n = len(stock)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = stock[1:] != stock[:-1]
    starts = np.flatnonzero(new)
    first = np.repeat(starts, np.diff(np.append(starts, n)))
    return np.arange(n) - first


def _lag_diff(v: np.ndarray, rows: np.ndarray, pos: np.ndarray, k: int) -> np.ndarray:
    """v[row] - v[row - k] for the given rows, NaN where the stock has fewer than k earlier records."""
    out = np.full(len(rows), np.nan)
    ok = pos[rows] >= k
    out[ok] = v[rows[ok]] - v[rows[ok] - k]
    return out


def past_return_signals(panel: pd.DataFrame, rows: np.ndarray,
                        cl: np.ndarray | None = None) -> pd.DataFrame:
    """MOM, STR and WSTR at the given panel rows.

    Args:
        panel: canonical panel sorted by (stock_id, date) with columns stock_id, date, ret.
        rows: int positions of the rebalance rows in ``panel``.
        cl: the panel's per-stock cumulative log return if already computed (else computed here).
    Returns:
        DataFrame (len(rows)) with stock_id, date, MOM, STR, WSTR (NaN where history is too short).
    """
    sid = panel["stock_id"].to_numpy()
    pos = _stock_positions(sid)
    cl = _cum_log(panel) if cl is None else cl
    mom = np.expm1(_lag_diff(cl, rows - MOM_SKIP, pos, MOM_LOOKBACK - MOM_SKIP))
    # rows - MOM_SKIP may cross into the previous stock; the position check on the shifted row is
    # only valid if the original row has at least MOM_SKIP earlier records, enforce that too.
    mom[pos[rows] < MOM_LOOKBACK] = np.nan
    strr = -np.expm1(_lag_diff(cl, rows, pos, STR_DAYS))
    wstr = -np.expm1(_lag_diff(cl, rows, pos, WSTR_DAYS))
    return pd.DataFrame({"stock_id": sid[rows], "date": panel["date"].to_numpy()[rows],
                         "MOM": mom, "STR": strr, "WSTR": wstr})


def calendar_momentum(panel: pd.DataFrame, rows: np.ndarray, lookback: int = 12,
                      skip: int = 1, cl: np.ndarray | None = None) -> np.ndarray:
    """Return over calendar months t-12..t-2 at the given panel rows (monthly/quarterly MOM).

    For a row dated in month F: exp(cl_end - cl_start) - 1 with cl_end = the stock's cumulative log
    return at its last record on or before the end of month F-``skip`` and cl_start the same at the
    end of month F-``lookback``; NaN unless the stock has a record inside month F-``lookback``.

    Args:
        panel: canonical panel sorted by (stock_id, date) with stock_id, date, ret.
        rows: int positions of the formation rows.
    Returns:
        float (len(rows),).
    """
    cl = _cum_log(panel) if cl is None else cl
    sid = panel["stock_id"].to_numpy().astype(np.int64)
    day = panel["date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    # (stock, day) as one sorted int64 key (the panel is sorted by stock then date), so "last record
    # on or before a day" is a single searchsorted for all rows at once.
    span = 1 << 20  # days; covers dates up to year 4840
    key = sid * span + (day + (1 << 19))
    f = panel["date"].to_numpy()[rows].astype("datetime64[M]")
    out = {}
    for name, back in (("end", skip), ("start", lookback)):
        m = f - np.timedelta64(back, "M")
        last_day = ((m + np.timedelta64(1, "M")).astype("datetime64[D]") - np.timedelta64(1, "D"))
        q = sid[rows] * span + (last_day.astype(np.int64) + (1 << 19))
        j = np.searchsorted(key, q, side="right") - 1
        ok = (j >= 0) & (sid[np.maximum(j, 0)] == sid[rows])
        if name == "start":
            # The start record must lie in month F - lookback itself (enough history, no stale price).
            rec_month = day[np.maximum(j, 0)].astype("datetime64[D]").astype("datetime64[M]")
            ok &= rec_month == m
        out[name] = np.where(ok, cl[np.maximum(j, 0)], np.nan)
    return np.expm1(out["end"] - out["start"])


def _cum_log(panel: pd.DataFrame) -> np.ndarray:
    """Per-stock cumulative log(1+ret) (float64), restarting at each stock."""
    lr = np.log1p(panel["ret"].to_numpy(dtype=np.float64))
    if np.isnan(lr).any() or np.isinf(lr).any():
        i = int(np.flatnonzero(~np.isfinite(lr))[0])
        raise InputError(f"panel ret is missing or <= -1 at row {i} "
                         f"(stock_id={panel['stock_id'].iat[i]}, date={panel['date'].iat[i]})")
    return pd.Series(lr).groupby(panel["stock_id"].to_numpy()).cumsum().to_numpy()


def trend_signal(panel: pd.DataFrame, rebalance_dates: pd.DatetimeIndex, freq: str,
                 history_days: int = 1000, lags: tuple[int, ...] = TREND_LAGS,
                 slope_window: int | None = None, cl: np.ndarray | None = None) -> pd.DataFrame:
    """Han-Zhou-Zhu TREND forecast at every panel row dated on a rebalance date.

    Args:
        panel: canonical panel sorted by (stock_id, date), columns stock_id, date, ret.
        rebalance_dates: sorted rebalance calendar (period ends), including in-sample history so
            that the first test date already has ``slope_window`` slopes.
        freq: 'week' | 'month' | 'quarter' (picks the default slope window).
        history_days: minimum records up to and including the date (>= max(lags)).
        cl: the panel's per-stock cumulative log return if already computed (else computed here).
    Returns:
        DataFrame stock_id, date, TREND (NaN without enough history or slopes), plus the per-date
        slopes in ``.attrs['slopes']`` (DataFrame index date, columns A_L, n_obs).
    """
    k_slopes = slope_window or TREND_SLOPE_WINDOW[freq]
    if history_days < max(lags):
        raise InputError(f"history_days={history_days} is shorter than the longest lag {max(lags)}")
    sid = panel["stock_id"].to_numpy()
    pos = _stock_positions(sid)
    cl = _cum_log(panel) if cl is None else cl
    # Adjusted close up to a per-stock constant (ratios are invariant): exp(cl); the per-stock
    # cumulative sum gives any trailing mean in O(1) per row without a rolling window per stock.
    adj = np.exp(cl)
    csum = pd.Series(adj).groupby(sid).cumsum().to_numpy()
    rdates = pd.DatetimeIndex(rebalance_dates)
    t_of_row = rdates.get_indexer(panel["date"].to_numpy())
    rows = np.flatnonzero(t_of_row >= 0)
    names = [f"A_{L}" for L in lags]
    A = np.full((len(rows), len(lags)), np.nan)
    enough = pos[rows] + 1 >= history_days
    for j, L in enumerate(lags):
        ok = enough & (pos[rows] + 1 >= L)
        r = rows[ok]
        prev = np.where(pos[r] >= L, csum[np.maximum(r - L, 0)], 0.0)
        A[ok, j] = (csum[r] - prev) / L / adj[r]
    R = pd.DataFrame(A, columns=names)
    R.insert(0, "stock_id", sid[rows])
    R.insert(1, "t", t_of_row[rows])
    R["cl"] = cl[rows]
    # Regression rows at t: return from t-1 to t on A_L at t-1 (the stock needs a record on both).
    lag = R[["stock_id", "t", "cl", *names]].copy()
    lag["t"] += 1
    reg = R[["stock_id", "t", "cl"]].merge(lag, on=["stock_id", "t"], suffixes=("", "_prev"))
    reg["y"] = np.expm1(reg["cl"] - reg["cl_prev"])
    reg = reg.dropna(subset=[*names, "y"]).sort_values("t", kind="stable")
    X = reg[names].to_numpy()
    y = reg["y"].to_numpy()
    tt = reg["t"].to_numpy()
    slopes = np.full((len(rdates), len(lags)), np.nan)
    nobs = np.zeros(len(rdates), dtype=np.int64)
    bounds = np.flatnonzero(np.diff(tt)) + 1
    # One small least-squares problem per rebalance date (hundreds to ~1,500 of them); the
    # A_L are strongly collinear, lstsq returns the minimum-norm solution in that case.
    for s, e in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(tt)]]), strict=True):
        if e - s < len(lags) + 2:  # not identified (needs more rows than coefficients)
            continue
        Xd = np.column_stack([np.ones(e - s), X[s:e]])
        beta, *_ = np.linalg.lstsq(Xd, y[s:e], rcond=None)
        slopes[tt[s]] = beta[1:]
        nobs[tt[s]] = e - s
    sl = pd.DataFrame(slopes, index=rdates, columns=names)
    beta_bar = sl.rolling(k_slopes, min_periods=k_slopes).mean().to_numpy()
    fc = np.einsum("ij,ij->i", R[names].to_numpy(), beta_bar[R["t"].to_numpy()])
    out = pd.DataFrame({"stock_id": R["stock_id"].to_numpy(),
                        "date": rdates[R["t"].to_numpy()], "TREND": fc})
    sl["n_obs"] = nobs
    out.attrs["slopes"] = sl
    return out


def panel_rows(panel: pd.DataFrame, keys: pd.DataFrame, what: str) -> np.ndarray:
    """int64 (len(keys),) position in ``panel`` of each (stock_id, date) row of ``keys``;
    InputError naming ``what`` and the first key the panel lacks."""
    pidx = pd.MultiIndex.from_arrays([panel["stock_id"].to_numpy(), panel["date"].to_numpy()])
    rows = pidx.get_indexer(pd.MultiIndex.from_arrays([keys["stock_id"].to_numpy(),
                                                        keys["date"].to_numpy()]))
    if (rows < 0).any():
        i = int(np.flatnonzero(rows < 0)[0])
        raise InputError(f"{what} rows not in the panel, first: stock_id={keys['stock_id'].iat[i]}, "
                         f"date={keys['date'].iat[i]}")
    return rows


def benchmark_signals(panel: pd.DataFrame, keys: pd.DataFrame, freq: str,
                      names: tuple[str, ...] | list[str] = BENCHMARKS,
                      history_days: int = 1000) -> pd.DataFrame:
    """Benchmark signals at the rows ``keys`` (stock_id, date), oriented so high = long.

    Args:
        panel: canonical panel sorted by (stock_id, date) with stock_id, date, ret, covering the
            history the signals need (TREND: ``history_days`` records plus K rebalance periods).
        keys: the evaluation rows (stock_id, date); every pair must be a panel record.
        freq: rebalance frequency of the keys.
    Returns:
        ``keys[['stock_id', 'date']]`` (same order) plus one float column per requested signal.
    """
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    out = keys[["stock_id", "date"]].reset_index(drop=True).copy()
    if not names:
        return out
    rows = panel_rows(panel, out, "benchmark")
    cl = _cum_log(panel)  # shared by every signal
    simple = [n for n in names if n != "TREND"]
    if simple:
        ps = past_return_signals(panel, rows, cl)
        if "MOM" in simple and freq in ("month", "quarter"):
            ps["MOM"] = calendar_momentum(panel, rows, cl=cl)
        for n in simple:
            out[n] = ps[n].to_numpy()
    if "TREND" in names:
        cal = period_ends(panel["date"].to_numpy(), freq)
        extra = pd.DatetimeIndex(pd.unique(out["date"].to_numpy())).difference(cal)
        if len(extra):
            log.warning("TREND: %d evaluation dates are not %s ends of the panel calendar; "
                        "they are added to the rebalance calendar", len(extra), freq)
            cal = cal.union(extra)
        # A history requirement below 1000 records (short test panels) keeps only the moving
        # averages it can fill; the default keeps all eleven (logged, never silent).
        lags = tuple(L for L in TREND_LAGS if L <= history_days)
        if len(lags) < len(TREND_LAGS):
            log.warning("TREND: history_days=%d drops the moving averages %s", history_days,
                        [L for L in TREND_LAGS if L > history_days])
        if not lags:
            raise InputError(f"TREND: history_days={history_days} is shorter than every lag")
        tr = trend_signal(panel, cal, freq, history_days=history_days, lags=lags, cl=cl)
        m = out[["stock_id", "date"]].merge(tr, on=["stock_id", "date"], how="left")
        out["TREND"] = m["TREND"].to_numpy()
        out.attrs["trend_slopes"] = tr.attrs["slopes"]
    return out
