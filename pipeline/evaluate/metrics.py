"""Classification metrics and signal-return correlations (docs/method.md section 7).

All functions take plain arrays or a long DataFrame with one row per (stock, date) and drop rows
whose realised return is missing, as METHOD 3.2 prescribes for evaluation.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from pipeline.direction import (P_UP_THRESHOLD, classifier_up, confusion_counts, confusion_metrics,
                                paired)
from pipeline.evaluate.statistics import newey_west_t

log = logging.getLogger(__name__)

# P(up) is clipped to [EPS, 1 - EPS] inside the log loss so that a (rare) saturated prediction gives
# a large finite loss instead of inf; it changes nothing for P in the usual (1e-6, 1 - 1e-6) range.
EPS = 1e-12


def classification_metrics(p_up: np.ndarray, ret: np.ndarray) -> dict:
    """Pooled loss, accuracy and MCC of up-probabilities against realised returns.

    Args:
        p_up: float (n,) predicted probability that ``ret > 0``.
        ret: float (n,) realised return; NaN = missing (the row is dropped).
    Returns:
        {"n", "loss", "accuracy", "mcc", "tp", "tn", "fp", "fn", "share_up_pred"}:
        y = 1[ret > 0], prediction = 1[P > 0.5];
        loss = -mean(y log P + (1-y) log(1-P)); accuracy = mean(pred == y);
        MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)), 0 when a margin is empty.
    """
    p, r = paired(p_up, ret, "p_up")
    n = int(len(p))
    if n == 0:
        return {"n": 0, "loss": float("nan"), "accuracy": float("nan"), "mcc": float("nan"),
                "tp": 0, "tn": 0, "fp": 0, "fn": 0, "share_up_pred": float("nan")}
    y = r > 0
    pc = np.clip(p, EPS, 1 - EPS)
    loss = float(-np.mean(np.where(y, np.log(pc), np.log1p(-pc))))
    tp, tn, fp, fn = confusion_counts(classifier_up(p), y)
    return {"n": n, "loss": loss, **confusion_metrics(tp, tn, fp, fn),
            "tp": tp, "tn": tn, "fp": fp, "fn": fn}


def _grouped_pearson(df: pd.DataFrame, x: str, y: str, by: str) -> pd.DataFrame:
    """Per-group Pearson correlation of columns x and y from grouped sums (no per-group Python loop)."""
    g = df.assign(_xx=df[x] * df[x], _yy=df[y] * df[y], _xy=df[x] * df[y]).groupby(by, sort=True)
    s = g[[x, y, "_xx", "_yy", "_xy"]].sum()
    n = g.size().astype(np.float64)
    # Centred sums computed from raw sums; the inputs (probabilities, ranks, returns) are O(1) or
    # O(n), far from the magnitudes where this cancels catastrophically.
    sxx = s["_xx"] - s[x] ** 2 / n
    syy = s["_yy"] - s[y] ** 2 / n
    sxy = s["_xy"] - s[x] * s[y] / n
    den = np.sqrt(sxx * syy)
    # Zero variance in either variable (or one row) -> undefined correlation (NaN).
    # (relative to the raw sums, so rounding residue of a constant column counts as zero).
    ok = (sxx > 1e-12 * s["_xx"].abs()) & (syy > 1e-12 * s["_yy"].abs()) & (n > 1)
    corr = (sxy / den).where(ok)
    return pd.DataFrame({"n": n.astype(np.int64), "corr": corr})


def correlations_by_date(df: pd.DataFrame, signal: str = "p_up", ret: str = "ret",
                         date: str = "date") -> pd.DataFrame:
    """Spearman and Pearson correlation of ``signal`` with ``ret`` per date.

    Args:
        df: long table, one row per (stock, date), with columns ``date``, ``signal``, ``ret``.
            Rows with a missing ``ret`` or ``signal`` are dropped.
    Returns:
        DataFrame indexed by date (sorted) with columns n (rows used), spearman (Pearson of the
        within-date average ranks, i.e. ties share their mean rank), pearson. A date with fewer than
        two rows or a constant variable has NaN correlations.
    """
    d = df[[date, signal, ret]].dropna()
    d = d.rename(columns={date: "_d", signal: "_s", ret: "_r"})
    pear = _grouped_pearson(d, "_s", "_r", "_d")
    ranks = pd.DataFrame({
        "_d": d["_d"].to_numpy(),
        "_s": d.groupby("_d")["_s"].rank(method="average").to_numpy(),
        "_r": d.groupby("_d")["_r"].rank(method="average").to_numpy(),
    })
    spear = _grouped_pearson(ranks, "_s", "_r", "_d")
    out = pd.DataFrame({"n": pear["n"], "spearman": spear["corr"], "pearson": pear["corr"]})
    out.index.name = date
    return out


def mean_correlations(by_date: pd.DataFrame) -> dict:
    """Average over dates of the per-date correlations (dates with NaN correlation are left out).

    Returns {"spearman", "pearson", "n_dates", "n_dates_undefined"}.
    """
    ok = by_date["spearman"].notna() & by_date["pearson"].notna()
    return {"spearman": float(by_date.loc[ok, "spearman"].mean()) if ok.any() else float("nan"),
            "pearson": float(by_date.loc[ok, "pearson"].mean()) if ok.any() else float("nan"),
            "n_dates": int(ok.sum()), "n_dates_undefined": int((~ok).sum())}


def ic_by_date(by_date: pd.DataFrame) -> pd.DataFrame:
    """The per-date information coefficient: the Spearman column of :func:`correlations_by_date`.

    Returns:
        DataFrame with columns date (sorted), ic (Spearman correlation of the signal with the
        realised return across the date's stocks; NaN when undefined) and n (stocks used).
    """
    return pd.DataFrame({"date": by_date.index.to_numpy(), "ic": by_date["spearman"].to_numpy(np.float64),
                         "n": by_date["n"].to_numpy(np.int64)})


def ic_summary(ic: pd.DataFrame) -> dict:
    """Mean, sd and t-statistics of the per-date IC over the dates where it is defined.

    Args:
        ic: from :func:`ic_by_date` (rows in date order).
    Returns:
        {"mean", "sd" (ddof=1), "t" (mean / (sd / sqrt(T))), "t_nw" (Newey-West, in date order),
        "ir" (mean / sd, per period, not annualised), "n_dates", "n_dates_undefined",
        "mean_n_stocks"}; NaN where undefined.
    """
    d = ic.sort_values("date", kind="stable")  # the Newey-West t needs the dates in order
    x = d["ic"].to_numpy(np.float64)
    ok = np.isfinite(x)
    v = x[ok]
    n = len(v)
    nan = float("nan")
    mean = float(v.mean()) if n else nan
    sd = float(v.std(ddof=1)) if n > 1 else nan
    pos = n > 1 and sd > 0
    return {"mean": mean, "sd": sd, "t": mean / (sd / math.sqrt(n)) if pos else nan,
            "t_nw": newey_west_t(v), "ir": mean / sd if pos else nan, "n_dates": int(n),
            "n_dates_undefined": int((~ok).sum()),
            "mean_n_stocks": float(d["n"].to_numpy()[ok].mean()) if n else nan}


def accuracy_cluster_se(p_up: np.ndarray, ret: np.ndarray, dates: np.ndarray,
                        threshold: float = P_UP_THRESHOLD) -> float:
    """Standard error of the pooled accuracy with dates as clusters (predicted up = p_up >
    ``threshold``: ``direction.P_UP_THRESHOLD`` for P(up), ``direction.SIGN_THRESHOLD`` for a
    regression run's predicted return).

    Images of one date share that period's market move, so their hits are correlated and the
    binomial sqrt(a(1-a)/n) understates the error. Cluster-robust: sqrt(sum_g (n_g (a_g - a))^2) / n
    over dates g with n_g rows and accuracy a_g (rows with a missing return dropped). NaN with fewer
    than two dates.
    """
    p = np.asarray(p_up, dtype=np.float64)
    r = np.asarray(ret, dtype=np.float64)
    keep = ~np.isnan(r)
    hit = ((p[keep] > threshold) == (r[keep] > 0)).astype(np.float64)
    g = pd.DataFrame({"d": np.asarray(dates)[keep], "h": hit}).groupby("d")["h"].agg(["sum", "count"])
    if len(g) < 2:
        return float("nan")
    a = hit.mean()
    resid = g["sum"].to_numpy() - g["count"].to_numpy() * a
    return float(np.sqrt(np.sum(resid ** 2) * len(g) / (len(g) - 1)) / len(hit))
