"""The Bayes-optimal accuracy of exactly the rows a run evaluates (synthetic market only).

    label_horizons(dates, suffix, calendar) -> int64 (n,)   records from each date to its label's end
    bayes_bound(cfg, rows, suffix) -> dict                  the bound, its stderr and what it covers

A model is judged against the best possible accuracy **for its own label at its own image dates**:
the monthly label R20 is the return from one month end to the next (19-23 records on a business-day
calendar), sampled at month ends only; the weekly R5 spans the 5 records to the next week end; the
``*d`` labels span a fixed number of records. The uniform-record, fixed-horizon table of the panel
stage (``panel/bayes_accuracy.json``) is a property of the market; this is the one every consumer
(evaluation metrics, report, tests, recovery study) compares with.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.images import windows
from pipeline.images.store import RETURN_SUFFIXES


def label_horizons(dates: np.ndarray, suffix: str, calendar: np.ndarray) -> np.ndarray:
    """Trading days of ``calendar`` from each date to the end of its ``suffix`` label, int64 (n,).

    suffix: "5d" | "20d" | "60d" (that many records) or "week" | "month" | "quarter" (to the next
    period end of the calendar, the end of the strict period label; METHOD 3.1). On a calendar
    without gaps in a stock's records (the synthetic market) trading days are records.
    Raises ValueError for an unknown suffix, or a date that is not a period end of the calendar or
    has no next one (such a row has no period label).
    """
    if suffix not in RETURN_SUFFIXES:
        raise ValueError(f"label {suffix!r}: choose one of {list(RETURN_SUFFIXES)}")
    d = windows.to_days(np.asarray(dates))
    if suffix.endswith("d"):
        return np.full(len(d), int(suffix[:-1]), dtype=np.int64)
    cal = np.unique(windows.to_days(np.asarray(calendar)))
    pe = windows.to_days(windows.period_ends(cal.astype("datetime64[D]"), suffix))
    pos = np.searchsorted(pe, d)
    is_end = (pos < len(pe)) & (pe[np.minimum(pos, len(pe) - 1)] == d)
    has_next = pos + 1 < len(pe)
    bad = ~(is_end & has_next)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"row {i}: {np.datetime64(int(d[i]), 'D')} is not a {suffix} end with a next "
                         f"{suffix} end in the calendar, so it has no ret_{suffix} label")
    nxt = pe[np.minimum(pos + 1, len(pe) - 1)]
    return (np.searchsorted(cal, nxt) - np.searchsorted(cal, d)).astype(np.int64)


def bayes_bound(cfg: Config, rows: pd.DataFrame, suffix: str) -> dict:
    """Bayes-optimal accuracy of the label ``ret_<suffix>`` over ``rows`` (stock_id, date).

    rows: the evaluated rows (test images with a realised label) of a run on the synthetic market
    ``cfg.synthetic``. Returns :func:`pipeline.panel.synthetic.bayes_accuracy_at`'s dict plus
    "label" (the return column) and "population" (what the rows are).
    """
    from pipeline.panel.synthetic import bayes_accuracy_at, market_dates

    calendar = market_dates(cfg.synthetic).values
    dates = rows["date"].to_numpy().astype("datetime64[ns]")
    h = label_horizons(dates, suffix, calendar)
    out = bayes_accuracy_at(cfg.synthetic, dates, rows["stock_id"].to_numpy(), h)
    out["label"] = f"ret_{suffix}"
    out["population"] = "the evaluated rows: test-period images with a realised label"
    return out


def gain_recovered(accuracy: float, bayes: float) -> float:
    """Fraction of the knowable accuracy gain over a coin flip: (acc - 0.5) / (Bayes - 0.5)."""
    return float((accuracy - 0.5) / (bayes - 0.5)) if bayes > 0.5 else float("nan")


def gain_recovered_se(accuracy: float, accuracy_se: float, bayes: float, bayes_se: float) -> float:
    """Delta-method standard error of :func:`gain_recovered` from the accuracy's (date-clustered)
    standard error and the bound's: sqrt(se_acc^2 + (g se_bayes)^2) / (Bayes - 0.5)."""
    if not bayes > 0.5:
        return float("nan")
    g = gain_recovered(accuracy, bayes)
    return float(math.sqrt(accuracy_se ** 2 + (g * bayes_se) ** 2) / (bayes - 0.5))
