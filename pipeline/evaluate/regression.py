"""Out-of-sample metrics of a regression run (``train.target`` return | vol_adjusted_return).

    sign_metrics(pred, ret) -> dict           sign accuracy, MCC, confusion, share predicted up
    regression_metrics(pred, target) -> dict  mean squared error and out-of-sample R^2
    sign_by_year(df) -> DataFrame             share predicted up vs realised and sign accuracy per year
    prediction_histogram(pred, ax=None) -> ax the distribution of the predictions

A regression run's score (the ``p_up`` column of its predictions, METHOD 3.6) is a predicted
return, not a probability: "predicted up" means a positive prediction (:func:`predicted_up`), the
accuracy is the share of rows whose predicted and realised signs agree, and the log loss,
calibration (ECE, reliability bins) and Platt/temperature scaling of a classifier do not apply.
Rank statistics (Spearman IC, decile portfolios) need no change: they use the order only.
Rows with a missing realised return are dropped (METHOD 3.2).

Why the threshold is 0 and not the mean target: the label's "up" is ``ret > 0`` (METHOD 3.2), and
the prediction is in the target's own units with nothing subtracted. ``regression_target`` does
not centre the return (``return``: ret itself; ``vol_adjusted_return``: ret over a positive
ex-ante volatility, the same sign), and the in-sample RMS ``target_scale`` the train stage divides
by is a positive factor folded back into the output layer's weights and bias alike
(``pipeline.train.loop.fold_target_scale``), so it moves no prediction across 0. A prediction
above 0 is thus a predicted return above 0: the label's "up", as "P(up) > 0.5" is the
classifier's. A model that learnt nothing predicts the pool's (positive) mean return and calls
every row up, as a classifier does at a base rate above 0.5. The two rules still differ in what
they estimate (the sign of a conditional mean versus whether P(ret > 0) exceeds one half, which
skewed returns can separate); that difference is the regression's, not an offset to correct.
Subtracting a mean or median would answer "above the average return", not the label's question.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.direction import SIGN_THRESHOLD, confusion_counts, confusion_metrics, paired, predicted_up

# predicted_up and SIGN_THRESHOLD (0) are the one "up" rule of a regression run (pipeline.direction);
# the module docstring says why the threshold is 0.

# Metrics of the classifier that a regression run reports as not applicable, with the reason.
NOT_APPLICABLE = {
    "loss": "cross-entropy of P(up): the regression score is a predicted return, not a probability",
    "calibration": "reliability of P(up) (ECE, bins): no probability to calibrate",
    "uncalibrated": "Platt/temperature scaling is refused for regression targets",
}


def sign_metrics(pred: np.ndarray, ret: np.ndarray) -> dict:
    """Sign accuracy of predictions against realised returns.

    Args:
        pred: float (n,) predicted return (any scale: only its sign is used).
        ret: float (n,) realised return; NaN = missing (the row is dropped).
    Returns:
        {"n", "accuracy", "mcc", "tp", "tn", "fp", "fn", "share_up_pred"}: predicted up =
        pred > 0, up = ret > 0; accuracy = mean(predicted up == up); MCC as METHOD 7 (0 when a
        margin is empty).
    """
    p, r = paired(pred, ret)
    tp, tn, fp, fn = confusion_counts(predicted_up(p), r > 0)
    return {"n": int(len(p)), **confusion_metrics(tp, tn, fp, fn), "tp": tp, "tn": tn, "fp": fp,
            "fn": fn}


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """Squared-error fit of predictions to the realised target (the value the run learnt).

    Args:
        pred: float (n,) predictions; target: float (n,) realised target in the same units
            (``pipeline.images.labels.regression_target``), NaN = missing (dropped).
    Returns:
        {"n", "mse", "r2_oos", "mean_pred", "sd_pred", "mean_target", "sd_target"}:
        mse = mean((target - pred)^2); r2_oos = 1 - sum((target - pred)^2) / sum(target^2), the
        out-of-sample R^2 against a forecast of zero (Gu, Kelly and Xiu's convention: no sample
        mean is subtracted, so a constant forecast cannot score by knowing the test-period mean).
    """
    p, y = paired(pred, target)
    nan = float("nan")
    if len(p) == 0:
        return {"n": 0, "mse": nan, "r2_oos": nan, "mean_pred": nan, "sd_pred": nan,
                "mean_target": nan, "sd_target": nan}
    sse = float(np.sum((y - p) ** 2))
    sst = float(np.sum(y ** 2))
    return {"n": int(len(p)), "mse": sse / len(p), "r2_oos": 1.0 - sse / sst if sst > 0 else nan,
            "mean_pred": float(p.mean()), "sd_pred": float(p.std(ddof=1)) if len(p) > 1 else nan,
            "mean_target": float(y.mean()), "sd_target": float(y.std(ddof=1)) if len(p) > 1 else nan}


def sign_by_year(df: pd.DataFrame, signal: str = "p_up", ret: str = "ret") -> pd.DataFrame:
    """Per calendar year of ``date``: n, share_up_pred (signal > 0), share_up_realised (ret > 0),
    mean_pred, accuracy (sign). Index: year (int)."""
    d = df[["date", signal, ret]].dropna()
    p = d[signal].to_numpy(dtype=np.float64)
    y = d[ret].to_numpy(dtype=np.float64) > 0
    up = predicted_up(p)
    t = pd.DataFrame({"year": pd.to_datetime(d["date"]).dt.year.to_numpy(), "pred": up, "y": y,
                      "p": p, "hit": up == y})
    g = t.groupby("year", sort=True)
    out = pd.DataFrame({"n": g.size(), "share_up_pred": g["pred"].mean(),
                        "share_up_realised": g["y"].mean(), "mean_pred": g["p"].mean(),
                        "accuracy": g["hit"].mean()})
    out.index.name = "year"
    return out


def prediction_histogram(pred: np.ndarray, ax=None, title: str = "", xlabel: str = "predicted return",
                         bins: int = 50):  # noqa: ANN001, ANN201
    """Histogram of a regression run's predictions with zero (the up/down threshold) marked.
    Returns the Axes."""
    if ax is None:
        ax = Figure(figsize=(6, 4)).subplots()
    p = np.asarray(pred, dtype=float)
    p = p[np.isfinite(p)]
    ax.hist(p, bins=bins, color="0.35")
    ax.axvline(SIGN_THRESHOLD, color="crimson", lw=1, ls="--", label="0 (up if above)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("stock-periods")
    ax.set_title(title or f"Out-of-sample predictions, n = {len(p):,}")
    ax.legend(frameon=False)
    return ax
