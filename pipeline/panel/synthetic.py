"""The embedded synthetic market: a deterministic, seeded daily panel with a planted, chart-visible signal.

The market is a vectorised state-space model. Each stock carries a small state (its last ``L=20``
closes, its last ``L`` log volumes, where today's close sits in today's high-low range and the sign of
today's return). One call of :func:`_step` advances every unit (a stock, or a Monte-Carlo path) by one
trading day. :func:`generate_market` runs it over all stocks and trading days (business days, or
every calendar day with ``calendar: daily``); :func:`bayes_accuracy`
restarts it from sampled ``(stock, date)`` states to compute the accuracy of the Bayes-optimal up/down
rule exactly by Monte-Carlo. docs/synthetic.md states every formula and parameter value.

Planted next-day drift of the daily log return (everything known at the close of day t)::

    mu_{t+1} = mu0 + s * ( - a_rev   * log(C_t / C_{t-5})                 # short-term reversal
                           + a_trend * log(C_t / MA20_t)                   # trend vs 20-day MA
                           + a_intra * sigma_i * (loc_t - 1/2)             # close location in range
                           + a_vol   * sigma_i * surge_t * sign(r_t) )     # volume surge x direction

with ``s = SyntheticConfig.signal_strength``, ``loc_t = log(C_t/L_t) / log(H_t/L_t)`` and
``surge_t = log V_t - mean(log V_{t-19..t})``; :func:`planted_features` computes all four from a panel.
The log return is ``r_{t+1} = mu_{t+1} + beta_i * m_{t+1} + sigma_i * e_{t+1}`` with market shock
``m ~ N(mu_m, sigma_m^2)`` and ``e ~ N(0, 1)``, both iid over days (the market is common to stocks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from pipeline.errors import InputError
from pipeline.config import SyntheticConfig
from pipeline.panel.store import PANEL_COLUMNS

log = logging.getLogger(__name__)

SOURCE = "synthetic"
L = 20  # state length: the 20-day moving average window (and the volume-surge window)
REV_LAG = 5  # the reversal term looks back this many records


@dataclass(frozen=True)
class MarketParams:
    """Fixed model constants (per day, log units). ``signal_strength`` scales the four ``a_*`` terms."""

    a_rev: float = 0.22  # reversal: drift per unit of the last 5-day log return (negative sign applied)
    a_trend: float = 0.15  # trend: drift per unit of log(close / MA20)
    a_intra: float = -1.0  # close location in the day's range, in units of the stock's daily vol
    a_vol: float = 0.5  # volume surge x sign(today's return), in units of the stock's daily vol
    # Zero log drift: the median return is 0, so with no planted signal up and down are equally likely
    # (the mean simple return is still about sigma^2/2 > 0 per day, an equity premium of ~7%/year).
    mu0: float = 0.0
    mu_m: float = 0.0
    sigma_m: float = 0.010  # market daily vol
    overnight_share: float = 0.3  # share of the day's variance (and drift) realised before the open
    range_scale: float = 0.45  # high/low extension beyond max/min(open, close), x sigma_i x Exp(1)
    vol_ar: float = 0.6  # AR(1) coefficient of log volume around its stock level
    vol_noise: float = 0.35  # innovation sd of log volume
    vol_abs_ret: float = 0.35  # log-volume loading on |standardised return shock| - E|Z|
    burn_in: int = 120  # days simulated before cfg.start so every state is stationary
    min_price: float = 1.0  # $: a stock whose close falls below this is delisted that day


PARAMS = MarketParams()
_E_ABS_Z = float(np.sqrt(2.0 / np.pi))


@dataclass
class _Units:
    """Per-unit constants. Arrays of shape (n,) aligned with the state's rows."""

    sigma: np.ndarray  # idiosyncratic daily log-return vol
    beta: np.ndarray  # market beta
    log_vbar: np.ndarray  # log of the stock's typical daily share volume

    def take(self, idx: np.ndarray) -> "_Units":
        return _Units(self.sigma[idx], self.beta[idx], self.log_vbar[idx])


@dataclass
class _State:
    """State after the close of a day; arrays of n units, all units at the same ring position.

    c (L, n): closes relative to an arbitrary per-unit level (only ratios matter), a ring buffer whose
    newest row is ``head`` (today) and oldest ``head+1 mod L`` (lag-major so that one lag of all units
    is contiguous). logv (L, n): log share volumes, same ring. intra (n,): close location
    log(C/L)/log(H/L) - 1/2 today. sgn (n,): sign of today's log return (-1, 0, 1).
    sc, sv (n,): running sums over the ring of c and logv (kept so a step needs no 20-wide reductions).
    """

    c: np.ndarray
    logv: np.ndarray
    intra: np.ndarray
    sgn: np.ndarray
    head: int = L - 1
    sc: np.ndarray | None = None
    sv: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sc is None:
            self.sc = self.c.sum(axis=0)
        if self.sv is None:
            self.sv = self.logv.sum(axis=0)

    def take(self, idx: np.ndarray) -> "_State":
        """Rows idx, with the ring unrolled to oldest-first (head = L-1)."""
        sh = -(self.head + 1) % L
        return _State(np.roll(self.c[:, idx], sh, axis=0), np.roll(self.logv[:, idx], sh, axis=0),
                      self.intra[idx].copy(), self.sgn[idx].copy(), L - 1, self.sc[idx].copy(),
                      self.sv[idx].copy())

    def repeat(self, k: int) -> "_State":
        """Each unit repeated k times consecutively (unit i -> rows i*k .. i*k+k-1)."""
        return _State(np.repeat(self.c, k, axis=1), np.repeat(self.logv, k, axis=1),
                      np.repeat(self.intra, k), np.repeat(self.sgn, k), self.head,
                      np.repeat(self.sc, k), np.repeat(self.sv, k))


def _features(st: _State) -> dict[str, np.ndarray]:
    """The four planted chart features at the close of the state's day; each array (n,).

    rev = log(C_t/C_{t-5}); trend = log(C_t/MA20_t), MA20 = mean of the last 20 closes including
    today; intra = close location in the range - 1/2; surge_dir = (log V_t - mean of the last 20
    log V) * sign(r_t).
    """
    c_t = st.c[st.head]
    rev = np.log(c_t / st.c[(st.head - REV_LAG) % L])
    trend = np.log(c_t * L / st.sc)
    surge = st.logv[st.head] - st.sv * (1.0 / L)
    return {"rev": rev, "trend": trend, "intra": st.intra, "surge_dir": surge * st.sgn}


def _drift(st: _State, u: _Units, strength: float, p: MarketParams = PARAMS) -> np.ndarray:
    """Expected log return of the next day given the state, (n,)."""
    f = _features(st)
    planted = (-p.a_rev * f["rev"] + p.a_trend * f["trend"]
               + u.sigma * (p.a_intra * f["intra"] + p.a_vol * f["surge_dir"]))
    return p.mu0 + strength * planted


def _total_sd(u: _Units, p: MarketParams = PARAMS) -> np.ndarray:
    """Sd of the next day's log return around its expected value, (n,)."""
    return np.sqrt((u.beta * p.sigma_m) ** 2 + u.sigma ** 2)


def _step(st: _State, u: _Units, strength: float, z: np.ndarray, zm: np.ndarray | None,
          p: MarketParams = PARAMS) -> dict[str, np.ndarray]:
    """Advance every unit one day, updating ``st`` in place.

    z (5, n): unit shocks [overnight N(0,1), intraday N(0,1), volume N(0,1), high Exp(1), low Exp(1)].
    zm (2, 1): market shocks [overnight, intraday] N(0,1) shared by all units (one market), or None
    when every unit has its own market (Monte-Carlo paths): then z[0], z[1] carry the market too,
    scaled by the total sd, which is the same distribution with two fewer draws.
    Returns the day's moves, arrays (n,): on (log open - previous log close), ci (log close - log
    open), hx (log high - max log(open, close)), lx (min log(open, close) - log low), r (log return
    close-to-close), logv (log share volume, of the integer volume).
    """
    mu = _drift(st, u, strength, p)
    # Python floats keep float32 Monte-Carlo arrays in float32 (a numpy float64 scalar would upcast).
    w_on, w_id = float(np.sqrt(p.overnight_share)), float(np.sqrt(1.0 - p.overnight_share))
    m_day = mu + u.beta * p.mu_m
    m_on, m_id = m_day * p.overnight_share, m_day * (1.0 - p.overnight_share)
    if zm is None:
        sd = _total_sd(u, p)
        on = m_on + sd * w_on * z[0]
        ci = m_id + sd * w_id * z[1]
    else:
        on = m_on + u.beta * p.sigma_m * w_on * zm[0] + u.sigma * w_on * z[0]
        ci = m_id + u.beta * p.sigma_m * w_id * zm[1] + u.sigma * w_id * z[1]
    r = on + ci
    hx = p.range_scale * u.sigma * z[3]
    lx = p.range_scale * u.sigma * z[4]
    # Close location in the day's range, all in log units relative to the open.
    lo_rel = np.minimum(0.0, ci) - lx
    rng = np.abs(ci) + hx + lx
    intra = np.where(rng > 0, (ci - lo_rel) / np.where(rng > 0, rng, 1.0), 0.5) - 0.5
    # Standardised total shock, so volume reacts to surprises, not to the drift.
    shock = (r - mu - u.beta * p.mu_m) / _total_sd(u, p)
    dev = st.logv[st.head] - u.log_vbar
    lv_raw = (u.log_vbar + p.vol_ar * dev + p.vol_noise * z[2]
              + p.vol_abs_ret * (np.abs(shock) - _E_ABS_Z))
    logv = np.log(np.maximum(np.rint(np.exp(lv_raw)), 100.0))  # whole shares, at least a round lot
    c_new = st.c[st.head] * np.exp(r)
    st.head = (st.head + 1) % L  # the oldest row, overwritten by today
    st.sc += c_new - st.c[st.head]
    st.sv += logv - st.logv[st.head]
    st.c[st.head] = c_new
    st.logv[st.head] = logv
    st.intra = intra
    st.sgn = np.sign(r)
    return {"on": on, "ci": ci, "hx": hx, "lx": lx, "r": r, "logv": logv}


def _draw_shocks(rng: np.random.Generator, n: int, dtype=np.float64) -> np.ndarray:
    """The unit shocks of one day, (5, n): rows 0-2 N(0,1), rows 3-4 Exp(1) (see :func:`_step`)."""
    z = np.empty((5, n), dtype=dtype)
    rng.standard_normal(out=z[:3], dtype=dtype)
    rng.standard_exponential(out=z[3:], dtype=dtype)
    return z


@dataclass
class _Universe:
    """Cross-sectional draws for n stocks; every array (n,). list_day/delist_day index the dates."""

    units: _Units
    shares: np.ndarray  # shares outstanding (shares)
    ipo_price: np.ndarray  # $ close on the listing day
    exchange: np.ndarray  # str
    list_day: np.ndarray  # int: the stock's first (return-less, dropped) record
    delist_day: np.ndarray  # int: the stock's last record


def _universe(cfg: SyntheticConfig, n_days: int) -> _Universe:
    rng = np.random.default_rng([cfg.seed, 1])
    n = int(cfg.n_stocks)
    # Size first: small firms are more volatile, trade relatively more and list on NASDAQ/AMEX.
    size_z = rng.standard_normal(n)
    shares = np.round(np.exp(np.log(40e6) + 1.1 * size_z + 0.3 * rng.standard_normal(n)), -3)
    ipo_price = np.exp(np.log(25.0) + 0.5 * rng.standard_normal(n) + 0.2 * size_z)
    sigma = np.clip(0.019 * np.exp(-0.25 * size_z + 0.2 * rng.standard_normal(n)), 0.008, 0.045)
    beta = np.clip(1.0 + 0.25 * rng.standard_normal(n), 0.3, 1.8)
    turnover = 0.005 * np.exp(0.4 * rng.standard_normal(n) - 0.15 * size_z)
    log_vbar = np.log(turnover * shares)
    p_nyse = 1.0 / (1.0 + np.exp(-(0.3 + 1.2 * size_z)))
    uex = rng.random(n)
    exchange = np.where(uex < p_nyse, "NYSE",
                        np.where(uex < p_nyse + 0.8 * (1 - p_nyse), "NASDAQ", "AMEX")).astype(object)
    # Listing: 55% trade from the first day; the rest list uniformly over the first 85% of the period.
    later = rng.random(n) >= 0.55
    list_day = np.where(later, rng.integers(0, max(1, int(0.85 * n_days)), n), 0)
    # Delisting: 40% delist, uniformly between one year after listing and the end; others survive.
    min_life = min(250, max(1, n_days // 4))
    dies = rng.random(n) < 0.40
    lo = np.minimum(list_day + min_life, n_days - 1)
    delist = lo + np.floor(rng.random(n) * (n_days - lo)).astype(np.int64)
    delist_day = np.where(dies, np.minimum(delist, n_days - 1), n_days - 1)
    return _Universe(_Units(sigma, beta, log_vbar), shares, ipo_price, exchange,
                     list_day.astype(np.int64), delist_day.astype(np.int64))


MAX_SIGNAL_STRENGTH = 2.0


def _check_cfg(cfg: SyntheticConfig) -> None:
    """Refuse settings the model does not support, naming the key."""
    if int(cfg.n_stocks) < 1:
        raise InputError(f"synthetic.n_stocks must be >= 1, got {cfg.n_stocks}")
    s = float(cfg.signal_strength)
    # The trend term is positive feedback: near s = 3 the return process stops being stationary
    # (prices explode); from s = 2 on, the $1 floor already delists most stocks.
    if not 0.0 <= s <= MAX_SIGNAL_STRENGTH:
        raise InputError(f"synthetic.signal_strength must be in [0, {MAX_SIGNAL_STRENGTH}], got {s}")


def market_dates(cfg: SyntheticConfig) -> pd.DatetimeIndex:
    """Trading days of the synthetic market from cfg.start to cfg.end inclusive: pandas business
    days (``calendar: business``) or every calendar day (``calendar: daily``, a 24/7 market; the
    model then takes one step per calendar day, so its "5-day" reversal spans 5 calendar days)."""
    if cfg.calendar == "daily":
        dates, what = pd.date_range(cfg.start, cfg.end, freq="D"), "calendar days"
    elif cfg.calendar == "business":
        dates, what = pd.bdate_range(cfg.start, cfg.end), "business days"
    else:  # validate() refuses this; kept for direct callers
        raise InputError(f"synthetic.calendar {cfg.calendar!r}: choose business or daily")
    if len(dates) < 2:
        raise InputError(f"synthetic: start={cfg.start!r}..end={cfg.end!r} gives {len(dates)} "
                         f"{what}; need at least 2")
    return dates


def _initial_state(u: _Units) -> _State:
    n = len(u.sigma)
    return _State(np.ones((L, n)), np.repeat(u.log_vbar[None, :], L, axis=0), np.zeros(n),
                  np.zeros(n), L - 1)


_OUT = ("on", "ci", "hx", "lx", "r", "logv")


def _simulate(cfg: SyntheticConfig, capture: tuple[np.ndarray, np.ndarray] | None = None,
              p: MarketParams = PARAMS):
    """Run the market over every stock and date (after ``p.burn_in`` unrecorded days).

    capture: optional (day index, stock index) integer arrays of equal length; the state after the
    close of each (day, stock) pair is returned in the given order (ring unrolled, head = L-1).
    Returns (dates, universe, moves, captured) with moves a dict of (T, n) float64 arrays keyed as
    :func:`_step`'s output (row = date index, column = stock index) and captured a _State or None.
    """
    _check_cfg(cfg)
    dates = market_dates(cfg)
    T, n = len(dates), int(cfg.n_stocks)
    uni = _universe(cfg, T)
    u = uni.units
    rng = np.random.default_rng([cfg.seed, 2])
    st = _initial_state(u)
    s = float(cfg.signal_strength)
    out = {k: np.empty((T, n)) for k in _OUT}
    cap = None
    if capture is not None:
        cday, cstock = (np.asarray(a, dtype=np.int64) for a in capture)
        if cday.shape != cstock.shape or (len(cday) and (cday.min() < 0 or cday.max() >= T
                                                         or cstock.min() < 0 or cstock.max() >= n)):
            raise ValueError("synthetic: capture indices out of range")
        order = np.argsort(cday, kind="stable")
        bounds = np.searchsorted(cday[order], np.arange(T + 1))
        m = len(cday)
        cap = _State(np.empty((L, m)), np.empty((L, m)), np.empty(m), np.empty(m), L - 1)
    for t in range(-p.burn_in, T):
        z = _draw_shocks(rng, n)
        zm = rng.standard_normal((2, 1))
        day = _step(st, u, s, z, zm, p)
        if t < 0:
            continue
        for k in _OUT:
            out[k][t] = day[k]
        if cap is not None and bounds[t + 1] > bounds[t]:
            rows = order[bounds[t]:bounds[t + 1]]
            sub = st.take(cstock[rows])
            cap.c[:, rows], cap.logv[:, rows] = sub.c, sub.logv
            cap.intra[rows], cap.sgn[rows] = sub.intra, sub.sgn
            cap.sc[rows], cap.sv[rows] = sub.sc, sub.sv
    return dates, uni, out, cap


def _log_close(uni: _Universe, mv: dict[str, np.ndarray]) -> np.ndarray:
    """Log closes in $, (T, n): cumulated log returns, each stock's path shifted so that its
    listing-day close is its IPO price (a per-stock level leaves returns and features unchanged)."""
    lc = np.cumsum(mv["r"], axis=0)
    n = lc.shape[1]
    lc += (np.log(uni.ipo_price) - lc[uni.list_day, np.arange(n)])[None, :]
    return lc


def _price_floor_delisting(close: np.ndarray, uni: _Universe, min_price: float) -> np.ndarray:
    """Last record day of each stock, (n,) int: its planned delisting day, or earlier the first day
    after listing on which its close falls below ``min_price`` (the exchanges' minimum-bid rule; it
    also keeps compounding from producing sub-cent prices). close: (T, n) $."""
    T = close.shape[0]
    day = np.arange(T)[:, None]
    breach = (close < min_price) & (day > uni.list_day[None, :]) & (day <= uni.delist_day[None, :])
    first = np.where(breach.any(axis=0), breach.argmax(axis=0), T)
    return np.minimum(uni.delist_day, first).astype(np.int64)


def generate_market(cfg: SyntheticConfig,
                    params: MarketParams = PARAMS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate the synthetic market.

    Returns ``(panel, stocks)``. ``panel`` has exactly ``store.PANEL_COLUMNS`` (stock_id int32 1..n,
    date datetime64[ns] trading day (:func:`market_dates`), open/high/low/close $ float64, volume shares float64, ret
    close-to-close float64 never NaN, mktcap $ thousands = close*shares/1000, exchange str,
    source 'synthetic'), sorted by (stock_id, date). A stock's records run from the day after its
    listing day (the listing-day record has no return and is dropped) to its delisting day.
    ``stocks`` has stock_id int32, ticker ('SYN0001', ...), exchange, plus the ground truth:
    shares (float64, shares outstanding, constant over the stock's life), idio_vol (sigma_i, daily
    log-return vol), beta, list_date and delist_date (the stock's first and last record).
    Deterministic given cfg; ``signal_strength`` scales the planted predictability (0 = none).
    """
    dates, uni, mv, _ = _simulate(cfg, p=params)
    T, n = mv["r"].shape
    lc = _log_close(uni, mv)
    close = np.exp(lc)
    lo = np.empty_like(lc)
    lo[1:] = lc[:-1] + mv["on"][1:]
    lo[0] = lc[0] - mv["ci"][0]
    ret = np.full((T, n), np.nan)
    ret[1:] = close[1:] / close[:-1] - 1.0
    day = np.arange(T)[:, None]
    delist_day = _price_floor_delisting(close, uni, params.min_price)
    alive = (day > uni.list_day[None, :]) & (day <= delist_day[None, :])
    # Stock-major order: transpose to (n, T) and take alive cells; rows come out sorted.
    m = alive.T
    sid, tix = np.nonzero(m)

    def pick(a: np.ndarray) -> np.ndarray:
        return a.T[m]

    close_v, lo_v, lc_v, ret_v = pick(close), pick(lo), pick(lc), pick(ret)
    hx_v, lx_v, logv_v = pick(mv["hx"]), pick(mv["lx"]), pick(mv["logv"])
    del close, lo, lc, ret, mv  # the (T, n) arrays: keep the peak memory down
    open_v = np.exp(lo_v)
    # Open/close ticks inside the bar by construction: high >= max(open, close), low <= min.
    high_v = np.maximum(np.exp(np.maximum(lo_v, lc_v) + hx_v), np.maximum(open_v, close_v))
    low_v = np.minimum(np.exp(np.minimum(lo_v, lc_v) - lx_v), np.minimum(open_v, close_v))
    del lo_v, lc_v, hx_v, lx_v
    shares = uni.shares[sid]
    cols = {
        "stock_id": (sid + 1).astype(np.int32),
        "date": dates.values[tix].astype("datetime64[ns]"),
        "open": open_v,
        "high": high_v,
        "low": low_v,
        "close": close_v,
        "volume": np.rint(np.exp(logv_v)),
        "ret": ret_v,
        "mktcap": close_v * shares / 1000.0,
        "exchange": uni.exchange[sid],
        "source": np.full(len(sid), SOURCE, dtype=object),
    }
    panel = pd.DataFrame(cols, copy=False)[PANEL_COLUMNS]  # (already in this order: no copy of data)
    del cols
    ids = np.arange(1, n + 1, dtype=np.int32)
    stocks = pd.DataFrame({
        "stock_id": ids,
        "ticker": [f"SYN{i:04d}" for i in ids],
        "exchange": uni.exchange,
        "shares": uni.shares.astype(np.float64),
        "idio_vol": uni.units.sigma,
        "beta": uni.units.beta,
        "list_date": dates.values[np.minimum(uni.list_day + 1, T - 1)],
        "delist_date": dates.values[delist_day],
    })
    # Only a very short period can leave a stock without records; it then has no id-map row either.
    stocks = stocks[m.any(axis=1)].reset_index(drop=True)
    log.info("synthetic market: %d stocks, %d rows, %s..%s", n, len(panel),
             dates[0].date(), dates[-1].date())
    return panel, stocks


def _sample_states(cfg: SyntheticConfig, uni: _Universe, k_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """k_draws (day, stock) index pairs drawn uniformly (with replacement, in draw order) from the
    planned records (listing to planned delisting) that have at least L records of history (a full
    20-day window of panel records: days list_day+1 .. day)."""
    first = uni.list_day + L  # the L-th return record after listing
    n_elig = np.maximum(uni.delist_day - first + 1, 0)
    total = int(n_elig.sum())
    if total == 0:
        raise InputError("synthetic: no stock has 20 records of history; lengthen start..end")
    rng = np.random.default_rng([cfg.seed, 3])
    k = rng.integers(0, total, int(k_draws))
    cum = np.cumsum(n_elig)
    stock = np.searchsorted(cum, k, side="right")
    day = first[stock] + (k - (cum[stock] - n_elig[stock]))
    return day.astype(np.int64), stock.astype(np.int64)


def _p_up(st: _State, u: _Units, strength: float, horizons: list[int], rng: np.random.Generator,
          p: MarketParams = PARAMS) -> np.ndarray:
    """P(sum of the next h log returns > 0) along each unit's simulated path, shape (len(horizons), n).

    Each unit runs max(h)-1 simulated days; the last day of each horizon is integrated analytically
    (its log return is Gaussian given the state: mean drift + beta*mu_m, sd _total_sd), a
    Rao-Blackwellisation that removes that day's Monte-Carlo noise.
    """
    n = len(u.sigma)
    hmax = max(horizons)
    dtype = st.c.dtype
    cum = np.zeros(n, dtype=dtype)
    sd = _total_sd(u, p)
    res = np.empty((len(horizons), n))
    for k in range(1, hmax + 1):
        if k in horizons:
            mean_last = _drift(st, u, strength, p) + u.beta * p.mu_m
            res[horizons.index(k)] = ndtr((cum + mean_last) / sd)
        if k == hmax:
            break
        day = _step(st, u, strength, _draw_shocks(rng, n, dtype), None, p)
        cum += day["r"]
    return res


def _check_bayes_cfg(cfg: SyntheticConfig) -> None:
    n_paths = int(cfg.bayes_paths)
    if n_paths < 2 or n_paths % 2:
        raise InputError(f"synthetic.bayes_paths must be an even number >= 2, got {cfg.bayes_paths}")
    if int(cfg.bayes_samples) < 2:
        raise InputError(f"synthetic.bayes_samples must be >= 2, got {cfg.bayes_samples}")
    _check_cfg(cfg)


def _state_estimates(cfg: SyntheticConfig, uni: _Universe, states: _State, stock: np.ndarray,
                     hs: list[int], params: MarketParams, rng_key: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-state plug-in and cross-fit accuracy of the best up/down rule and P-hat, each (len(hs), m).

    states: m captured states (float64), stock: (m,) stock index of each; hs: sorted horizons in
    records. plug = max(P-hat, 1 - P-hat) over all paths; cross = direction chosen on one half of
    the paths, scored with the other half's P-hat (and vice versa, averaged). See bayes_accuracy.
    """
    m = len(stock)
    n_paths = int(cfg.bayes_paths)
    rng = np.random.default_rng([cfg.seed, rng_key])
    plug = np.empty((len(hs), m))
    cross = np.empty((len(hs), m))
    p_hat = np.empty((len(hs), m))
    chunk = max(1, 65536 // n_paths)
    half = n_paths // 2
    for a in range(0, m, chunk):
        idx = np.arange(a, min(m, a + chunk))
        # float32 paths halve the memory traffic; their rounding (1e-7 relative) is far below the
        # Monte-Carlo error.
        f32 = np.float32
        st = _State(states.c[:, idx].astype(f32), states.logv[:, idx].astype(f32),
                    states.intra[idx].astype(f32), states.sgn[idx].astype(f32), L - 1,
                    states.sc[idx].astype(f32), states.sv[idx].astype(f32)).repeat(n_paths)
        uu = uni.units.take(np.repeat(stock[idx], n_paths))
        u = _Units(uu.sigma.astype(f32), uu.beta.astype(f32), uu.log_vbar.astype(f32))
        pu = _p_up(st, u, float(cfg.signal_strength), hs, rng, params).reshape(len(hs), len(idx), n_paths)
        p_all = pu.mean(axis=2, dtype=np.float64)
        p_hat[:, idx] = p_all
        plug[:, idx] = np.maximum(p_all, 1.0 - p_all)
        pa = pu[:, :, :half].mean(axis=2, dtype=np.float64)
        pb = pu[:, :, half:].mean(axis=2, dtype=np.float64)
        cross[:, idx] = 0.5 * (np.where(pa > 0.5, pb, 1.0 - pb) + np.where(pb > 0.5, pa, 1.0 - pa))
    return plug, cross, p_hat


def _summarise(plug: np.ndarray, cross: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy (midpoint), stderr, lower, upper from per-state estimates (..., m) along the last axis."""
    m = plug.shape[-1]
    mid = 0.5 * (plug + cross)
    se = mid.std(axis=-1, ddof=1) / np.sqrt(m)
    half_gap = 0.5 * (plug.mean(axis=-1) - cross.mean(axis=-1))
    return {"accuracy": mid.mean(axis=-1), "stderr": np.sqrt(se ** 2 + half_gap ** 2),
            "accuracy_lower": cross.mean(axis=-1), "accuracy_upper": plug.mean(axis=-1)}


def bayes_accuracy(cfg: SyntheticConfig, horizons=(5, 20, 60),
                   params: MarketParams = PARAMS) -> pd.DataFrame:
    """Accuracy of the Bayes-optimal up/down rule for the return over the next h records.

    Target: A_h = E[max(P, 1-P)] with P = P(sum of the next h daily log returns > 0 | F_t), the
    expectation over (stock, date) states drawn uniformly (with replacement) from the market's
    records that have a full 20-record history. The model is Markov in the state, so P is computed
    by restarting the generator from the exact captured state and simulating cfg.bayes_paths
    futures (the last day of each horizon integrated analytically). With P-hat the path mean:

    - accuracy_upper = mean of max(P-hat, 1-P-hat): the plug-in, biased UP by Monte-Carlo noise
      (Jensen: max is convex), so E[accuracy_upper] >= A_h;
    - accuracy_lower = cross-fit: direction chosen on one half of the paths and scored with the
      other half's P-hat (and vice versa, averaged): unbiased for a rule that is at most as good as
      Bayes, so E[accuracy_lower] <= A_h;
    - accuracy = their midpoint; stderr = sqrt(se^2 + ((upper - lower)/2)^2) where se is the
      standard error of the per-state midpoints over states (it contains each state's Monte-Carlo
      variance) and the second term bounds the remaining Monte-Carlo bias.

    This is the bound of a *uniformly sampled record* and a fixed horizon; the bound of the rows a
    run actually evaluates (image dates, period labels) is :func:`bayes_accuracy_at`.

    Returns one row per horizon (sorted, de-duplicated): horizon (int, records), accuracy, stderr,
    n_samples (states), accuracy_lower, accuracy_upper. Deterministic given cfg (and params).
    """
    hs = sorted({int(h) for h in horizons})
    if not hs or hs[0] < 1:
        raise InputError(f"synthetic.bayes_accuracy: horizons must be positive integers, got {horizons}")
    _check_bayes_cfg(cfg)
    dates = market_dates(cfg)
    uni = _universe(cfg, len(dates))
    # Rejection sampling: draw uniformly from the planned records, keep those the $1 floor did not
    # remove (known only after simulating), in draw order: uniform over the panel's records.
    m = int(cfg.bayes_samples)
    cday, cstock = _sample_states(cfg, uni, 2 * m + 100)
    _, _, mv, cand = _simulate(cfg, capture=(cday, cstock), p=params)
    last = _price_floor_delisting(np.exp(_log_close(uni, mv)), uni, params.min_price)
    keep = np.flatnonzero(cday <= last[cstock])[:m]
    if len(keep) < m:
        raise RuntimeError(f"synthetic: only {len(keep)} of {2 * m + 100} sampled states survive the "
                           f"${params.min_price} price floor; cannot draw bayes_samples={m}")
    stock = cstock[keep]
    states = _State(cand.c[:, keep], cand.logv[:, keep], cand.intra[keep], cand.sgn[keep], L - 1,
                    cand.sc[keep], cand.sv[keep])
    del mv, cand
    plug, cross, _ = _state_estimates(cfg, uni, states, stock, hs, params, rng_key=4)
    summ = _summarise(plug, cross)
    res = pd.DataFrame({"horizon": np.asarray(hs, dtype=np.int64), "accuracy": summ["accuracy"],
                        "stderr": summ["stderr"], "n_samples": m,
                        "accuracy_lower": summ["accuracy_lower"],
                        "accuracy_upper": summ["accuracy_upper"]})
    log.info("synthetic Bayes accuracy (signal_strength=%g): %s", cfg.signal_strength,
             ", ".join(f"h={h}: {a:.4f}+-{e:.4f}" for h, a, e in
                       zip(res.horizon, res.accuracy, res.stderr)))
    return res


def bayes_accuracy_at(cfg: SyntheticConfig, dates: np.ndarray, stock_ids: np.ndarray,
                      horizons: np.ndarray, params: MarketParams = PARAMS) -> dict:
    """Bayes-optimal accuracy for exactly the given (stock, date, horizon) rows.

    The bound of what a run evaluates: its rows are image dates (period ends, not uniform days) and
    a period label spans a varying number of records (a month 19-23), so the uniform-record,
    fixed-horizon :func:`bayes_accuracy` is only an approximation of it. Here the target is
    A = mean over the rows of max(P_i, 1 - P_i), P_i = P(sum of the next h_i log returns > 0 | F_t)
    at row i's date; ``cfg.bayes_samples`` rows are drawn uniformly without replacement (all rows
    when there are fewer), their exact states are captured from the generator, and P_i is
    estimated as in :func:`bayes_accuracy` (same plug-in / cross-fit midpoint and stderr; the
    stderr also covers the sampling of rows, since it is the spread of per-row values over rows).

    Args:
        dates: datetime64 (n,) trading days of this market (``market_dates(cfg)``);
        stock_ids: int (n,) ids 1..n_stocks of this market;
        horizons: int (n,) records from the date to the end of each row's label (>= 1).
    Returns:
        {"accuracy", "stderr", "accuracy_lower", "accuracy_upper", "n_samples", "n_rows",
         "horizon_min", "horizon_max", "share_up_bayes" (share of rows the Bayes rule calls up),
         "mean_p_bayes" (mean true P(up): the expected share of up returns)}.
    Raises:
        ValueError naming the first row whose date is not a trading day of the market, whose stock
        id is unknown, or whose horizon is not positive.
    """
    _check_bayes_cfg(cfg)
    d = np.asarray(dates).astype("datetime64[ns]")
    sid = np.asarray(stock_ids, dtype=np.int64)
    h = np.asarray(horizons, dtype=np.int64)
    if not (d.shape == sid.shape == h.shape) or d.ndim != 1:
        raise ValueError(f"bayes_accuracy_at: dates {d.shape}, stock_ids {sid.shape} and horizons "
                         f"{h.shape} must be 1-D of one length")
    if len(d) == 0:
        raise ValueError("bayes_accuracy_at: no rows")
    cal = market_dates(cfg).values.astype("datetime64[ns]")
    day = np.searchsorted(cal, d)
    bad = (day >= len(cal)) | (cal[np.minimum(day, len(cal) - 1)] != d)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"bayes_accuracy_at: row {i} has date {d[i]}, not a trading day of the "
                         f"synthetic market {cfg.start}..{cfg.end}")
    bad = (sid < 1) | (sid > int(cfg.n_stocks))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"bayes_accuracy_at: row {i} has stock_id {sid[i]}, outside 1..{cfg.n_stocks}")
    if (h < 1).any():
        i = int(np.flatnonzero(h < 1)[0])
        raise ValueError(f"bayes_accuracy_at: row {i} has horizon {h[i]}; horizons must be >= 1")
    # Canonical (date, stock) order first, so the sample does not depend on the caller's row order.
    order = np.lexsort((sid, day))
    day, sid, h = day[order], sid[order], h[order]
    n = len(d)
    m = min(int(cfg.bayes_samples), n)
    pick = np.sort(np.random.default_rng([cfg.seed, 5]).choice(n, size=m, replace=False))
    cday, cstock, ch = day[pick], sid[pick] - 1, h[pick]
    uni = _universe(cfg, len(cal))
    _, _, mv, cand = _simulate(cfg, capture=(cday, cstock), p=params)
    del mv
    hs = sorted({int(x) for x in ch})
    plug, cross, p_hat = _state_estimates(cfg, uni, cand, cstock, hs, params, rng_key=6)
    row = np.searchsorted(np.asarray(hs), ch)
    cols = np.arange(m)
    summ = _summarise(plug[row, cols], cross[row, cols])
    out = {k: float(v) for k, v in summ.items()}
    p = p_hat[row, cols]
    # What the Bayes rule itself predicts: the share it calls "up", and the expected share of up
    # returns (mean P); the realised share differs from the latter by the test period's market luck.
    out.update(share_up_bayes=float(np.mean(p > 0.5)), mean_p_bayes=float(np.mean(p)))
    out.update(n_samples=int(m), n_rows=int(n), horizon_min=int(ch.min()), horizon_max=int(ch.max()))
    log.info("synthetic Bayes accuracy at %d of %d rows (horizons %d-%d records): %.4f +- %.4f",
             m, n, out["horizon_min"], out["horizon_max"], out["accuracy"], out["stderr"])
    return out


def planted_features(panel: pd.DataFrame) -> pd.DataFrame:
    """The four planted features computed from a canonical panel (sorted by stock_id, date).

    Returns a frame aligned row for row with ``panel``: rev = log(C_t / C_{t-5}), trend =
    log(C_t / MA20_t) (MA20 = mean of the last 20 closes including t), intra = log(C/L)/log(H/L) - 1/2,
    surge_dir = (log V_t - mean of the last 20 log V) * sign(ret_t), and n_hist = the record's
    position in its stock (0 = first record). Rows with n_hist < 19 have NaN features: their
    20-record window would reach before the stock's first record, where the model's state is
    unobserved. With the stock's idio_vol sigma_i, the model's next-day drift is exactly
    mu0 + s * (-a_rev*rev + a_trend*trend + sigma_i*(a_intra*intra + a_vol*surge_dir)).
    """
    sid = panel["stock_id"].to_numpy()
    n = len(sid)
    start = np.r_[True, sid[1:] != sid[:-1]] if n else np.zeros(0, bool)
    first_idx = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    n_hist = np.arange(n) - first_idx
    close = panel["close"].to_numpy(np.float64)
    logv = np.log(panel["volume"].to_numpy(np.float64))

    def lagged(a: np.ndarray, k: int) -> np.ndarray:
        out = np.full(n, np.nan)
        out[k:] = a[:-k] if k else a
        return out

    def mean20(a: np.ndarray) -> np.ndarray:
        cs = np.cumsum(np.r_[0.0, a])
        out = np.full(n, np.nan)
        out[L - 1:] = (cs[L:] - cs[:-L]) / L
        return out

    ok = n_hist >= L - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        rev = np.log(close / lagged(close, REV_LAG))
        trend = np.log(close / mean20(close))
        lh, ll = np.log(panel["high"].to_numpy(np.float64)), np.log(panel["low"].to_numpy(np.float64))
        intra = np.log(close) - ll
        intra = np.where(lh > ll, intra / np.where(lh > ll, lh - ll, 1.0), 0.5) - 0.5
        surge = (logv - mean20(logv)) * np.sign(panel["ret"].to_numpy(np.float64))
    nan = np.nan
    return pd.DataFrame({
        "rev": np.where(ok, rev, nan), "trend": np.where(ok, trend, nan),
        "intra": np.where(ok, intra, nan), "surge_dir": np.where(ok, surge, nan),
        "n_hist": n_hist.astype(np.int64),
    }, index=panel.index)


def bayes_table_markdown(res: pd.DataFrame) -> str:
    """A Markdown table of :func:`bayes_accuracy`'s result (as in docs/synthetic.md)."""
    lines = ["| horizon (records) | accuracy | stderr | lower (cross-fit) | upper (plug-in) | states |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in res.itertuples(index=False):
        lines.append(f"| {r.horizon} | {r.accuracy:.4f} | {r.stderr:.4f} | {r.accuracy_lower:.4f} "
                     f"| {r.accuracy_upper:.4f} | {r.n_samples} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m pipeline.panel.synthetic [signal_strength [n_stocks]]
    import sys
    import time

    logging.basicConfig(level=logging.WARNING)
    _cfg = SyntheticConfig(signal_strength=float(sys.argv[1]) if len(sys.argv) > 1 else 1.0,
                           n_stocks=int(sys.argv[2]) if len(sys.argv) > 2 else SyntheticConfig.n_stocks)
    _t, _c = time.perf_counter(), time.process_time()
    _df, _ = generate_market(_cfg)
    _tg, _cg = time.perf_counter() - _t, time.process_time() - _c
    _t, _c = time.perf_counter(), time.process_time()
    _res = bayes_accuracy(_cfg, horizons=(1, 5, 20, 60))
    _tb, _cb = time.perf_counter() - _t, time.process_time() - _c
    print(f"{_cfg}\ngenerate_market: {len(_df)} rows in {_tg:.1f} s wall ({_cg:.1f} s CPU); "
          f"bayes_accuracy: {_tb:.1f} s wall ({_cb:.1f} s CPU)\n")
    print(bayes_table_markdown(_res))
