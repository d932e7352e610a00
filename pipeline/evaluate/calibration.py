"""Calibration of out-of-sample P(up): reliability table, expected calibration error, share up by year.

    reliability_table(p_up, ret, n_bins=10) -> DataFrame   one row per bin of P(up)
    expected_calibration_error(table) -> float             ECE, in probability units
    by_year(df) -> DataFrame                               share predicted up vs realised, per year

Conventions (stated once here):

- Bins are **equal-count** (quantiles of P(up), ``N_BINS`` = 10): CNN probabilities crowd near 0.5,
  so equal-width bins over [0, 1] would put almost every image in one or two bins. Ties in P(up)
  stay in one bin, so a bin may hold more or fewer than n / 10 rows.
- ECE = sum over bins of (rows in bin / rows) x |mean P(up) - realised up share| (up = ret > 0).
- "Predicted up" means P(up) > 0.5, the classification rule of the accuracy (METHOD 7).
- Rows with a missing realised return are dropped (METHOD 3.2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.direction import classifier_up

N_BINS = 10


def _clean(p_up: np.ndarray, ret: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(up), up = ret > 0) of the rows with both values present."""
    p = np.asarray(p_up, dtype=np.float64)
    r = np.asarray(ret, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"p_up has shape {p.shape} but ret has {r.shape}")
    keep = ~np.isnan(r) & ~np.isnan(p)
    return p[keep], r[keep] > 0


def reliability_table(p_up: np.ndarray, ret: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """Equal-count bins of P(up) against the realised up share.

    Args:
        p_up: float (n,) predicted P(ret > 0); ret: float (n,) realised return, NaN = missing.
    Returns:
        DataFrame indexed by bin (1 = lowest P(up)) with columns n, p_lo, p_hi (range of P(up) in
        the bin), p_mean (mean P(up)), up_share (share of ret > 0), se (binomial standard error of
        up_share). Empty bins (many ties) are dropped.
    """
    return _reliability(*_clean(p_up, ret), n_bins)


def _reliability(p: np.ndarray, y: np.ndarray, n_bins: int) -> pd.DataFrame:
    if len(p) == 0:
        return pd.DataFrame(columns=["n", "p_lo", "p_hi", "p_mean", "up_share", "se"],
                            index=pd.Index([], name="bin"))
    order = np.argsort(p, kind="stable")
    ps = p[order]
    # Bin edges at quantile positions, moved to the end of a run of ties so ties share a bin.
    cuts = np.searchsorted(ps, ps[np.linspace(0, len(ps), n_bins + 1).astype(np.int64)[1:-1]], side="right")
    bounds = np.unique(np.r_[0, cuts, len(ps)])
    bin_of = np.empty(len(p), dtype=np.int64)
    bin_of[order] = np.searchsorted(bounds[1:], np.arange(len(ps)), side="right") + 1
    d = pd.DataFrame({"bin": bin_of, "p": p, "y": y.astype(np.float64)})
    g = d.groupby("bin", sort=True)
    out = pd.DataFrame({"n": g.size(), "p_lo": g["p"].min(), "p_hi": g["p"].max(),
                        "p_mean": g["p"].mean(), "up_share": g["y"].mean()})
    out["se"] = np.sqrt(out["up_share"] * (1 - out["up_share"]) / out["n"])
    return out


def expected_calibration_error(table: pd.DataFrame) -> float:
    """ECE of a :func:`reliability_table`: row-weighted mean |p_mean - up_share|."""
    n = table["n"].to_numpy(dtype=np.float64)
    if n.sum() == 0:
        return float("nan")
    gap = np.abs(table["p_mean"].to_numpy() - table["up_share"].to_numpy())
    return float(np.sum(n * gap) / n.sum())


def by_year(df: pd.DataFrame, signal: str = "p_up", ret: str = "ret") -> pd.DataFrame:
    """Per calendar year of ``date``: n, share_up_pred (P > 0.5), share_up_realised (ret > 0),
    mean_p_up, accuracy, ece (within the year). Index: year (int)."""
    d = df[["date", signal, ret]].dropna()
    year = pd.to_datetime(d["date"]).dt.year.to_numpy()
    p = d[signal].to_numpy(dtype=np.float64)
    y = d[ret].to_numpy(dtype=np.float64) > 0
    up = classifier_up(p)
    t = pd.DataFrame({"year": year, "pred": up, "y": y, "p": p, "hit": up == y})
    g = t.groupby("year", sort=True)
    out = pd.DataFrame({"n": g.size(), "share_up_pred": g["pred"].mean(),
                        "share_up_realised": g["y"].mean(), "mean_p_up": g["p"].mean(),
                        "accuracy": g["hit"].mean()})
    # One small table per year (tens of years), not a loop over rows.
    out["ece"] = [expected_calibration_error(_reliability(grp["p"].to_numpy(), grp["y"].to_numpy(), N_BINS))
                  for _, grp in g]
    out.index.name = "year"
    return out


def calibration_summary(p_up: np.ndarray, ret: np.ndarray, n_bins: int = N_BINS) -> dict:
    """{"ece", "n_bins", "binning", "share_up_pred", "share_up_realised", "mean_p_up", "bins": [...]}
    for metrics.json (bins: the reliability table as records)."""
    tab = reliability_table(p_up, ret, n_bins)
    p, y = _clean(p_up, ret)
    return {"ece": expected_calibration_error(tab), "n_bins": int(len(tab)),
            "binning": f"{n_bins} equal-count bins of P(up)",
            "share_up_pred": float(np.mean(classifier_up(p))) if len(p) else float("nan"),
            "share_up_realised": float(np.mean(y)) if len(p) else float("nan"),
            "mean_p_up": float(np.mean(p)) if len(p) else float("nan"),
            "bins": [{"bin": int(b), **{k: float(v) for k, v in r.items()}} for b, r in tab.iterrows()]}
