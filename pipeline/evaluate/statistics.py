"""Time-series statistics of portfolio returns: Newey-West t-statistics, alpha regressions.

    newey_west_lags(T) -> int                 the lag rule used everywhere (stated once here)
    newey_west_t(x, lags=None) -> float       HAC t-statistic of the mean of a return series
    alpha_regression(y, x, lags=None) -> dict y_t = alpha + beta x_t + e_t, with a HAC t of alpha
    compare_with(main, other, freq) -> dict   correlation and alpha of one H-L series on another

Conventions: Bartlett-kernel (Newey-West 1987) long-run variance with
lags = floor(4 (T / 100)^(2/9)) (Newey-West 1994's rule of thumb; 6 lags for 1,000 weekly periods,
4 for 240 monthly ones); the alpha is per period and annualised by the frequency's K
(pipeline.evaluate.conventions). NaN periods are dropped (pairwise for two series).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.evaluate.conventions import periods_per_year


def newey_west_lags(n_periods: int) -> int:
    """floor(4 (T / 100)^(2/9)), at least 0."""
    return max(0, int(math.floor(4.0 * (max(n_periods, 0) / 100.0) ** (2.0 / 9.0))))


def _long_run_variance(u: np.ndarray, lags: int) -> float:
    """Bartlett-weighted sum of autocovariances of the (already centred) series u."""
    n = len(u)
    s = float(u @ u) / n
    for k in range(1, min(lags, n - 1) + 1):  # a handful of lags, each one vector product
        s += 2.0 * (1.0 - k / (lags + 1.0)) * float(u[k:] @ u[:-k]) / n
    return s


def newey_west_t(x: np.ndarray, lags: int | None = None) -> float:
    """Mean / HAC standard error of the mean; NaN with fewer than 3 periods or zero variance."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 3:
        return float("nan")
    lags = newey_west_lags(n) if lags is None else int(lags)
    lrv = _long_run_variance(v - v.mean(), lags)
    return float(v.mean() / math.sqrt(lrv / n)) if lrv > 0 else float("nan")


def alpha_regression(y: np.ndarray, x: np.ndarray, lags: int | None = None) -> dict:
    """OLS of y on a constant and x with Newey-West (HAC) standard errors.

    Returns {"alpha" (per period), "beta", "alpha_t_nw", "beta_t_nw", "r2", "n", "lags"}.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(x)
    y, x = y[ok], x[ok]
    n = len(y)
    nan = float("nan")
    if n < 4 or np.var(x) == 0:
        return {"alpha": nan, "beta": nan, "alpha_t_nw": nan, "beta_t_nw": nan, "r2": nan, "n": n,
                "lags": 0}
    lags = newey_west_lags(n) if lags is None else int(lags)
    X = np.column_stack([np.ones(n), x])
    xtx_inv = np.linalg.inv(X.T @ X)
    b = xtx_inv @ X.T @ y
    e = y - X @ b
    g = X * e[:, None]  # moment contributions (n, 2)
    S = g.T @ g / n
    for k in range(1, min(lags, n - 1) + 1):
        w = 1.0 - k / (lags + 1.0)
        c = g[k:].T @ g[:-k] / n
        S += w * (c + c.T)
    cov = n * xtx_inv @ S @ xtx_inv
    se = np.sqrt(np.diag(cov))
    r2 = 1.0 - float(e @ e) / float(((y - y.mean()) ** 2).sum()) if np.var(y) > 0 else nan
    return {"alpha": float(b[0]), "beta": float(b[1]), "alpha_t_nw": float(b[0] / se[0]),
            "beta_t_nw": float(b[1] / se[1]), "r2": r2, "n": int(n), "lags": int(lags)}


def compare_with(main: pd.Series, other: pd.Series, freq: str) -> dict:
    """How much of ``main`` (an H-L return series indexed by date) is ``other``: the correlation of
    the two series on their common dates and the regression main = alpha + beta other.

    Returns {"corr", "alpha_ann" (alpha x K), "alpha_t_nw", "beta", "r2", "n_periods"}.
    """
    both = pd.concat([main.rename("m"), other.rename("o")], axis=1, join="inner").dropna()
    if len(both) < 4:
        return {"corr": float("nan"), "alpha_ann": float("nan"), "alpha_t_nw": float("nan"),
                "beta": float("nan"), "r2": float("nan"), "n_periods": int(len(both))}
    reg = alpha_regression(both["m"].to_numpy(), both["o"].to_numpy())
    return {"corr": float(both["m"].corr(both["o"])), "alpha_ann": reg["alpha"] * periods_per_year(freq),
            "alpha_t_nw": reg["alpha_t_nw"], "beta": reg["beta"], "r2": reg["r2"],
            "n_periods": int(len(both))}
