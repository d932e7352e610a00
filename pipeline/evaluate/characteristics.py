"""Stock characteristics from the OHLCV panel and their correlation with P(up) (the paper's Table 5;
docs/method.md section 8).

    characteristics(panel, keys, freq, ...) -> DataFrame   characteristics at the rows ``keys``
    characteristic_correlations(pred, chars) -> DataFrame  time-averaged per-date Spearman of p_up
    market_return(panel) -> Series                         the equal-weighted market return per date

These are the project's definitions, in the usual literature form; the paper's exact definitions are
unverified. "Records" are the stock's own panel rows (trading days with a valid return), counted up to
and including the row's date, so nothing after the date is used. A statistic over a window of W records
needs at least ceil(W / 2) usable records in it, else it is NaN (near the start of a stock's history the
window holds the records available, fewer than W).

- MOM, STR, WSTR, TREND: the benchmark signals of :mod:`pipeline.evaluate.benchmarks`, as oriented
  there (STR = -(return over the last 21 records), WSTR = -(return over the last 5 records), the
  "lagged weekly return" with its sign flipped; MOM and TREND as defined there).
- volatility: sample sd (ddof = 1) of the daily return over the last 20 records; decimal per day.
- high_52w: adjusted close / max adjusted close over the last 252 records (1 at a new high, <= 1);
  the adjusted close is exp(cumulative log return), so splits and dividends do not move it.
- dollar_volume: log of the mean of |close| x volume over the last 20 records with a volume (log $;
  |close| because CRSP marks bid/ask midpoints with a negative sign); NaN when that mean is 0.
- zero_trade: number of records among the last 20 with zero or missing volume (a count, 0..20).
  The window needs 10 records, not 10 volumes: a missing volume is what is counted.
- illiquidity (Amihud 2002): mean of |ret| / (|close| x volume / 1e6) over the last 20 records with a
  positive dollar volume; return per $ million traded.
- beta: OLS slope of the daily return on the equal-weighted market return over the last 60 records.
- price_delay (Hou-Moskowitz 2005 D1): over the last 60 records, regress the daily return r_t on
  the market return m_t (restricted) and on m_t, m_{t-1}, ..., m_{t-4} (unrestricted), each with an
  intercept; D1 = 1 - R2_restricted / R2_unrestricted (0 = no delay, near 1 = the market's news
  reaches the price late). The lags are in market days (the panel's trading calendar), not in the
  stock's records; a record counts if m_t..m_{t-4} all exist. HM use weekly returns over a year: this
  daily 60-record version is the project's choice.

The market return m_t = cross-sectional mean of ret on date t over every panel stock with a record on
that date (equal-weighted, all stocks the panel holds, not only the evaluated ones).

Rolling statistics are computed for the whole panel at once: each stock's rows are laid out with a
gap of W - 1 NaNs before them, so one plain rolling window over the padded array never mixes two
stocks and its ``min_periods`` counts the stock's usable records. The regressions are solved from
rolling sums of cross-products (no per-stock or per-row Python loop).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.errors import InputError
from pipeline.evaluate.benchmarks import BENCHMARKS, _cum_log, benchmark_signals, panel_rows
from pipeline.evaluate.metrics import correlations_by_date
from pipeline.evaluate.statistics import newey_west_t

OWN = ("volatility", "high_52w", "dollar_volume", "zero_trade", "illiquidity", "beta",
       "price_delay")
CHARACTERISTICS = (*BENCHMARKS, *OWN)
VOL_DAYS, HIGH_DAYS, LIQ_DAYS, BETA_DAYS = 20, 252, 20, 60
DELAY_LAGS = 4
MIN_STOCKS = 10  # a date's correlation needs this many stocks with both values

LABELS = {"MOM": "MOM", "STR": "STR (-ret 21d)", "WSTR": "WSTR (-ret 5d)", "TREND": "TREND",
          "volatility": "Volatility (20d)", "high_52w": "52-week high",
          "dollar_volume": "Dollar volume (log, 20d)", "zero_trade": "Zero-trade days (20d)",
          "illiquidity": "Amihud illiquidity (20d)", "beta": "Beta (60d)",
          "price_delay": "Price delay D1 (60d)"}


def _min_obs(window: int) -> int:
    return math.ceil(window / 2)


class _Padded:
    """The panel's rows spread over a longer array with ``gap`` NaNs before each stock.

    ``at`` maps panel row i to its padded position; any rolling window of at most gap + 1 slots ending
    at a stock's row sees only that stock's rows (and NaNs).
    """

    def __init__(self, stock: np.ndarray, gap: int):
        n = len(stock)
        new = np.ones(n, dtype=bool)
        new[1:] = stock[1:] != stock[:-1]
        ordinal = np.cumsum(new)  # 1 for the first stock
        self.at = np.arange(n) + gap * ordinal
        self.size = (n + gap * int(ordinal[-1])) if n else 0

    def rolling(self, x: np.ndarray, window: int, min_periods: int):
        """A pandas Rolling over ``x`` (float, panel rows) padded with NaN."""
        p = np.full(self.size, np.nan)
        p[self.at] = x
        return pd.Series(p).rolling(window, min_periods=min_periods)


def market_return(panel: pd.DataFrame) -> pd.Series:
    """Equal-weighted market return per date: mean of ``ret`` over the panel's records on that date.

    Returns:
        float Series (decimal per day) indexed by date, sorted.
    """
    return panel.groupby("date", sort=True)["ret"].mean()


def _regression_stats(panel: pd.DataFrame, rows: np.ndarray, pad: _Padded) -> dict[str, np.ndarray]:
    """beta and price_delay at ``rows`` from rolling sums of cross-products over BETA_DAYS records.

    With z = (m_t, m_{t-1}, ..., m_{t-4}) and y = r_t on the records where all exist, the centred
    window moments give S_zz (5x5), S_zy (5) and S_yy; beta = S_{m0 y} / S_{m0 m0},
    R2_restricted = S_{m0 y}^2 / (S_{m0 m0} S_yy), R2_unrestricted = S_zy' S_zz^-1 S_zy / S_yy.
    """
    mkt = market_return(panel)
    t = mkt.index.get_indexer(panel["date"].to_numpy())
    m = mkt.to_numpy(np.float64)
    k = DELAY_LAGS + 1
    y = panel["ret"].to_numpy(np.float64)
    ok = np.isfinite(y) & (t >= DELAY_LAGS)  # the first market days lack their lags
    one = np.where(ok, 1.0, np.nan)
    ym = y * one

    def z(lag: int) -> np.ndarray:  # m_{t-lag} on the usable records, NaN elsewhere
        return m[np.maximum(t - lag, 0)] * one

    mp = _min_obs(BETA_DAYS)

    def wsum(x: np.ndarray) -> np.ndarray:
        # One padded column at a time, read at ``rows`` only: the panel-length temporaries stay few.
        return pad.rolling(x, BETA_DAYS, mp).sum().to_numpy()[pad.at[rows]]

    n = wsum(one)
    sy = wsum(ym)
    # Centred moments from raw window sums: returns are O(0.01-0.1) over 60 records, far from where
    # this cancels badly (the same trade-off as metrics._grouped_pearson).
    syy = wsum(ym * ym) - sy ** 2 / n
    sz = [wsum(z(i)) for i in range(k)]
    szy = np.stack([wsum(z(i) * ym) - sz[i] * sy / n for i in range(k)], axis=1)
    szz = np.empty((len(rows), k, k))
    for i in range(k):
        zi = z(i)
        for j in range(i, k):
            szz[:, i, j] = szz[:, j, i] = wsum(zi * z(j)) - sz[i] * sz[j] / n
    d = np.sqrt(np.clip(np.einsum("nii->ni", szz), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(szz[:, 0, 0] > 0, szy[:, 0] / szz[:, 0, 0], np.nan)
        r2_r = szy[:, 0] ** 2 / (szz[:, 0, 0] * syy)
        corr = szz / (d[:, :, None] * d[:, None, :])
    # A (near-)singular S_zz (constant market, collinear lags) gets NaN rather than a crash: it is
    # replaced by the identity before the batched solve and masked afterwards. The determinant of
    # the lags' correlation matrix is 1 for orthogonal lags and 0 for collinear ones.
    good = np.isfinite(corr).all(axis=(1, 2)) & np.isfinite(szy).all(axis=1) & (syy > 0)
    good[good] = np.linalg.det(corr[good]) > 1e-10
    a = np.where(good[:, None, None], szz, np.eye(k))
    b = np.where(good[:, None], szy, 0.0)
    coef = np.linalg.solve(a, b[:, :, None])[:, :, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        r2_u = np.einsum("ij,ij->i", coef, b) / syy
        delay = np.where(good & (r2_u > 0), 1.0 - r2_r / r2_u, np.nan)
    return {"beta": beta, "price_delay": delay}


def own_characteristics(panel: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The OHLCV characteristics other than the benchmark signals at the given panel rows.

    Args:
        panel: canonical panel sorted by (stock_id, date) with stock_id, date, ret, close, volume,
            holding each stock's history before the rows (and every stock, for the market return).
        rows: int positions in ``panel``.
    Returns:
        DataFrame (len(rows)) with columns OWN (module docstring: definitions and units).
    """
    missing = [c for c in ("stock_id", "date", "ret", "close", "volume") if c not in panel.columns]
    if missing:
        raise InputError(f"characteristics: panel lacks columns {missing}")
    rows = np.asarray(rows, dtype=np.int64)
    sid = panel["stock_id"].to_numpy()
    out: dict[str, np.ndarray] = {}
    if len(panel) == 0 or len(rows) == 0:
        return pd.DataFrame({c: np.full(len(rows), np.nan) for c in OWN})
    ret = panel["ret"].to_numpy(np.float64)
    close = np.abs(panel["close"].to_numpy(np.float64))
    vol = panel["volume"].to_numpy(np.float64)
    dv = close * vol  # $ traded; NaN where volume or price is missing
    pad = _Padded(sid, HIGH_DAYS - 1)  # the longest window; shorter ones fit in the same gaps

    at = pad.at[rows]
    out["volatility"] = pad.rolling(ret, VOL_DAYS, _min_obs(VOL_DAYS)).std(ddof=1).to_numpy()[at]
    adj = np.exp(_cum_log(panel))
    hi = pad.rolling(adj, HIGH_DAYS, _min_obs(HIGH_DAYS)).max().to_numpy()[at]
    out["high_52w"] = adj[rows] / hi
    mdv = pad.rolling(dv, LIQ_DAYS, _min_obs(LIQ_DAYS)).mean().to_numpy()[at]
    with np.errstate(divide="ignore"):
        out["dollar_volume"] = np.where(mdv > 0, np.log(np.where(mdv > 0, mdv, 1.0)), np.nan)
    zero = np.where(~(vol > 0), 1.0, 0.0)  # zero or missing volume (NaN > 0 is False)
    out["zero_trade"] = pad.rolling(zero, LIQ_DAYS, _min_obs(LIQ_DAYS)).sum().to_numpy()[at]
    with np.errstate(divide="ignore", invalid="ignore"):
        illiq = np.where(dv > 0, np.abs(ret) / (dv / 1e6), np.nan)
    out["illiquidity"] = pad.rolling(illiq, LIQ_DAYS, _min_obs(LIQ_DAYS)).mean().to_numpy()[at]
    out.update(_regression_stats(panel, rows, pad))
    return pd.DataFrame({c: out[c] for c in OWN})


def characteristics(panel: pd.DataFrame, keys: pd.DataFrame, freq: str, history_days: int = 1000,
                    signals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every characteristic of CHARACTERISTICS at the rows ``keys`` (stock_id, date).

    Args:
        panel: canonical panel sorted by (stock_id, date) with stock_id, date, ret, close, volume,
            covering the history the windows and benchmark signals need.
        keys: the rows wanted; every pair must be a panel record.
        freq: rebalance frequency of the keys ('week' | 'month' | 'quarter'; MOM and TREND use it).
        history_days: TREND's history requirement (benchmarks.benchmark_signals).
        signals: benchmark signals already computed at exactly these keys (same order), e.g. by the
            evaluation stage; any of MOM/STR/WSTR/TREND it lacks are computed here.
    Returns:
        ``keys[['stock_id', 'date']]`` (same order, index reset) plus one float column per
        characteristic (NaN where the history is too short).
    """
    out = keys[["stock_id", "date"]].reset_index(drop=True).copy()
    rows = panel_rows(panel, out, "characteristic")
    have = [] if signals is None else [b for b in BENCHMARKS if b in signals.columns]
    if have and len(signals) != len(out):
        raise InputError(f"characteristics: {len(signals)} benchmark signal rows for {len(out)} keys")
    need = [b for b in BENCHMARKS if b not in have]
    sig = benchmark_signals(panel, out, freq, need, history_days=history_days) if need else None
    for b in BENCHMARKS:
        out[b] = (signals[b] if b in have else sig[b]).to_numpy(np.float64)
    own = own_characteristics(panel, rows)
    for c in OWN:
        out[c] = own[c].to_numpy()
    return out


def characteristic_correlations(pred: pd.DataFrame, chars: pd.DataFrame,
                                names: tuple[str, ...] | list[str] | None = None,
                                min_stocks: int = MIN_STOCKS) -> pd.DataFrame:
    """Time-averaged per-date Spearman correlation of p_up with each characteristic.

    Args:
        pred: stock_id, date, p_up (one row per stock and date).
        chars: stock_id, date and characteristic columns (from :func:`characteristics`).
        names: the characteristics to use (default: every non-key column of ``chars``).
        min_stocks: a date enters only with at least this many stocks having both values.
    Returns:
        DataFrame indexed by characteristic (name 'characteristic') with columns mean (average over
        dates of the Spearman correlation), sd (ddof = 1), t (mean / (sd / sqrt(n_dates))), t_nw
        (Newey-West t of the mean, dates in order), n_dates (dates used), n_dates_skipped (dates with
        a p_up but too few stocks or an undefined correlation), mean_n_stocks.
    """
    names = [c for c in chars.columns if c not in ("stock_id", "date")] if names is None else list(names)
    m = pred[["stock_id", "date", "p_up"]].merge(chars[["stock_id", "date", *names]],
                                                  on=["stock_id", "date"], how="left")
    all_dates = pd.Index(pd.unique(m["date"]))
    nan = float("nan")
    recs = []
    for c in names:  # a dozen characteristics, each one grouped computation
        by = correlations_by_date(m, "p_up", c)
        use = by[(by["n"] >= min_stocks) & by["spearman"].notna()].sort_index()
        v = use["spearman"].to_numpy(np.float64)
        n = len(v)
        mean = float(v.mean()) if n else nan
        sd = float(v.std(ddof=1)) if n > 1 else nan
        recs.append({"characteristic": c, "mean": mean, "sd": sd,
                     "t": mean / (sd / math.sqrt(n)) if n > 1 and sd > 0 else nan,
                     "t_nw": newey_west_t(v), "n_dates": int(n),
                     "n_dates_skipped": int(len(all_dates) - n),
                     "mean_n_stocks": float(use["n"].mean()) if n else nan})
    cols = ["mean", "sd", "t", "t_nw", "n_dates", "n_dates_skipped", "mean_n_stocks"]
    if not recs:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="characteristic"))
    return pd.DataFrame(recs).set_index("characteristic")[cols]
