"""Evaluation conventions, stated once and imported everywhere (docs/method.md section 7).

Every table and figure of the evaluation stage follows these rules; :func:`conventions_text` renders
them as the note printed under every table, so a reader never has to guess units or signs.

- Rebalance frequency follows the return horizon: R5 weekly, R20 monthly, R60 quarterly.
- Annualisation (arithmetic, no risk-free rate): mean * K, sd(ddof=1) * sqrt(K), SR = ratio;
  K = 52 (week), 12 (month), 4 (quarter).
- Deciles: 1 = lowest signal (P(up)) ... 10 = highest; H-L = decile 10 minus decile 1.
- Weighting: EW = 1/n within the decile; VW = cap_i / sum cap at formation (rows with a missing or
  non-positive cap are left out of VW portfolios only).
- Turnover of the H-L portfolio: mean per-rebalance turnover scaled to a monthly figure (x4 weekly,
  x1 monthly, /3 quarterly), in percent (at most 200% per rebalance).
- Significance of the H-L mean: t = mean / (sd / sqrt(T)); */**/*** at two-sided 10/5/1%
  (|t| >= 1.645 / 1.96 / 2.576), a project convention.
- Newey-West t of a mean: Bartlett kernel, floor(4 (T/100)^(2/9)) lags (pipeline.evaluate.statistics).
- Trading costs of H-L: cost_t = 2 c x TO_t with c = evaluate.cost_bps / 10^4 per side (every
  dollar bought and every dollar sold pays c; the dollars traded are sum |dw| = 2 TO_t) and TO_t
  the per-rebalance turnover above (a fraction, at most 2.0), charged to the period formed at t;
  net_t = H-L_t - cost_t on every date with an H-L return. A date with an H-L return but no TO_t
  (the first date, or one after a date without a complete H-L portfolio) is charged the turnover
  of building the position from nothing, 1/2 (1 + 1) = 1.0 (ESTABLISH_TURNOVER); closing a
  position before such a gap is not charged. Break-even cost = mean(H-L_t) / (2 mean(charged
  TO_t)) x 10^4, in bp per side: the c at which the mean net return is zero.
- Cumulative H-L return: the running SUM of per-period returns (not compounded): H-L is a
  self-financing position and the means above are arithmetic. Maximum drawdown = the largest fall
  of that sum from its running peak (the peak includes the start, 0 before the first period).
- Per-year H-L statistics group periods by the calendar year of their formation date.
- Information coefficient (IC): per rebalance date, the Spearman correlation (average ranks) of the
  signal with the realised return across stocks; summarised by mean, sd, plain t and Newey-West t
  over the dates with a defined IC.
- Sharpe-ratio differences: t = dSR * sqrt(OOS years); one-sided 10/5/1% (1.28 / 1.645 / 2.33).
"""

from __future__ import annotations

import math

from pipeline.config import FREQUENCIES, HORIZON_FREQUENCY  # noqa: F401 - FREQUENCIES re-exported

# Periods per year used to annualise per-period means, sds and Sharpe ratios.
ANNUALISATION: dict[str, int] = {"week": 52, "month": 12, "quarter": 4}
# Multiplies a mean per-rebalance turnover into a monthly figure.
TURNOVER_TO_MONTHLY: dict[str, float] = {"week": 4.0, "month": 1.0, "quarter": 1.0 / 3.0}

N_DECILES = 10
DECILES = tuple(range(1, N_DECILES + 1))
HL = "H-L"  # the long-short "decile": decile 10 minus decile 1
# Fewest stocks with a signal and a return for a date to be sorted into deciles; fewer -> the
# date is skipped and counted (ten deciles need at least ten names).
MIN_STOCKS_PER_DATE = 10

WEIGHTINGS = ("ew", "vw")
PROXY_LABEL = "dollar-volume-weighted (proxy)"

# Trading costs: the cost charged per period is COST_PER_TURNOVER x (cost in bp / 10^4) x TO_t,
# with TO_t = 1/2 sum_i |dw_i| (a full replacement of both legs is TO_t = 2.0). The cost is per
# side: every dollar bought and every dollar sold pays it, and the dollars traded are
# sum_i |dw_i| = 2 TO_t, hence 2.0 (a full replacement of both legs trades 4 dollars per dollar of
# each leg and costs 4 x c).
COST_PER_TURNOVER = 2.0
# Turnover charged on a date with an H-L return but no TO_t (no position the period before): the
# formula above with w_{t-1} = 0, 1/2 (sum of long weights + |sum of short weights|) = 1.0.
ESTABLISH_TURNOVER = 1.0
BP = 1e-4  # one basis point as a decimal
# Window (periods) of the rolling mean drawn over the per-date IC bars.
IC_ROLLING_PERIODS = 12

# Two-sided thresholds (t-stat of a mean) and one-sided thresholds (Sharpe differences).
STARS_TWO_SIDED = ((2.576, "***"), (1.96, "**"), (1.645, "*"))
STARS_ONE_SIDED = ((2.33, "***"), (1.645, "**"), (1.28, "*"))


def frequency_of_horizon(horizon: int) -> str:
    """Rebalance frequency implied by the return horizon (METHOD 2.9): 5 -> week, 20 -> month, 60 -> quarter."""
    try:
        return HORIZON_FREQUENCY[int(horizon)]
    except KeyError:
        raise ValueError(f"horizon {horizon!r}: choose one of {sorted(HORIZON_FREQUENCY)}") from None


def periods_per_year(freq: str) -> int:
    """K of the annualisation for a rebalance frequency."""
    try:
        return ANNUALISATION[freq]
    except KeyError:
        raise ValueError(f"frequency {freq!r}: choose one of {list(ANNUALISATION)}") from None


def decile_label(decile: int | str) -> str:
    """Row label of a decile in the paper's tables: 1 -> 'Low', 10 -> 'High', 'H-L' stays."""
    if decile == HL:
        return HL
    d = int(decile)
    if d == 1:
        return "Low"
    if d == N_DECILES:
        return "High"
    if 1 < d < N_DECILES:
        return str(d)
    raise ValueError(f"decile {decile!r} is not in 1..{N_DECILES} or {HL!r}")


def weighting_label(weighting: str, mktcap_is_proxy: bool) -> str:
    """Words for a weighting scheme; the proxy label when the 'caps' are dollar-volume proxies."""
    if weighting == "ew":
        return "equal-weighted"
    if weighting == "vw":
        return PROXY_LABEL if mktcap_is_proxy else "value-weighted"
    raise ValueError(f"weighting {weighting!r}: choose one of {list(WEIGHTINGS)}")


def weighting_short(weighting: str, mktcap_is_proxy: bool) -> str:
    """Column prefix: 'EW', 'VW', or 'DVW' (dollar-volume-weighted proxy) so tables never mislabel."""
    if weighting == "ew":
        return "EW"
    if weighting == "vw":
        return "DVW" if mktcap_is_proxy else "VW"
    raise ValueError(f"weighting {weighting!r}: choose one of {list(WEIGHTINGS)}")


def stars(t: float, one_sided: bool = False) -> str:
    """'***', '**', '*' or '' for a t-statistic (two-sided 10/5/1% unless ``one_sided``)."""
    if t is None or not math.isfinite(t):
        return ""
    table = STARS_ONE_SIDED if one_sided else STARS_TWO_SIDED
    x = t if one_sided else abs(t)
    for threshold, s in table:
        if x >= threshold:
            return s
    return ""


def conventions_text(freq: str, mktcap_is_proxy: bool, weights: tuple[str, ...] | list[str] = WEIGHTINGS,
                     universe: str = "all", return_column: str | None = None) -> str:
    """The note printed under every evaluation table (plain text, one paragraph)."""
    k = periods_per_year(freq)
    to_factor = {"week": "x4", "month": "x1", "quarter": "/3"}[freq]
    parts = [
        f"Rebalanced every {freq}; returns are annualised arithmetic means (per-{freq} mean x {k}), "
        f"Sharpe ratios = mean / sd(ddof=1) x sqrt({k}), no risk-free rate.",
        f"Deciles sort on the signal at each {freq} end: Low (1) = lowest, High (10) = highest "
        "(expected best); breakpoints are the 10th..90th percentiles (linear interpolation), "
        f"{HL} = High minus Low.",
    ]
    w = [weighting_label(x, mktcap_is_proxy) for x in weights]
    wtxt = "EW = equal-weighted (1/n)"
    if "vw" in weights:
        prefix = weighting_short("vw", mktcap_is_proxy)
        wtxt += (f"; {prefix} = {w[list(weights).index('vw')]} "
                 "(weight = cap / sum of caps at formation)")
        if mktcap_is_proxy:
            wtxt += (" using the 60-record trailing mean of close x volume in place of market cap; "
                     "not comparable to CRSP value weights")
    parts.append(wtxt + ".")
    parts.append(f"Turnover of {HL}: mean per-rebalance turnover scaled to a month ({to_factor}), "
                 "in percent.")
    parts.append(f"Significance of the {HL} mean: t = mean / (sd / sqrt(T)); */**/*** = two-sided "
                 "10/5/1% (|t| >= 1.645/1.96/2.576); the Newey-West t uses a Bartlett kernel with "
                 "floor(4 (T/100)^(2/9)) lags.")
    if universe == "top500":
        parts.append("Universe: the 500 largest stocks by cap"
                     + (" (proxy)" if mktcap_is_proxy else "") + " at each formation.")
    elif universe == "top500_june":
        parts.append("Universe: the 500 largest stocks by cap" + (" (proxy)" if mktcap_is_proxy else "")
                     + " at the end of June of each year (reference convention; mild look-ahead "
                     "for January-May).")
    if return_column:
        parts.append(f"Holding-period return: {return_column}.")
    return " ".join(parts)


def cost_text(cost_bps: float) -> str:
    """One sentence on how the net-of-cost H-L returns are formed (for notes under tables)."""
    mult = "" if COST_PER_TURNOVER == 1.0 else f"{COST_PER_TURNOVER:g} x "
    return (f"Net of cost: {HL} net return = {HL} return - {mult}{cost_bps:g} bp x turnover per "
            "rebalance (turnover a fraction, at most 2.0; building the position from nothing, on the "
            f"first date or after a gap, counts {ESTABLISH_TURNOVER:g}); break-even cost = mean {HL} "
            f"return / ({mult}mean turnover), in bp per side. "
            f"Cumulative {HL} returns are running sums of per-period returns (not compounded).")
