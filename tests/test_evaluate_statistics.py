"""Newey-West t-statistics and alpha regressions (pipeline.evaluate.statistics)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.statistics import alpha_regression, compare_with, newey_west_lags, newey_west_t


def test_lag_rule():
    assert newey_west_lags(100) == 4 and newey_west_lags(1000) == 6 and newey_west_lags(240) == 4
    assert newey_west_lags(0) == 0


def test_zero_lags_is_the_plain_t_with_population_variance():
    x = np.random.default_rng(0).normal(0.1, 1.0, 500)
    t_plain = x.mean() / (x.std(ddof=0) / np.sqrt(len(x)))
    assert newey_west_t(x, lags=0) == pytest.approx(t_plain)


def test_autocorrelated_series_get_a_smaller_t():
    rng = np.random.default_rng(1)
    e = rng.normal(size=5000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for i in range(1, len(e)):  # AR(1) with rho 0.6, a test fixture
        ar[i] = 0.6 * ar[i - 1] + e[i]
    x = ar + 0.05
    plain = newey_west_t(x, lags=0)
    hac = newey_west_t(x, lags=20)
    # Long-run variance of AR(1) = sigma^2 / (1 - rho)^2 vs sigma^2 / (1 - rho^2): t shrinks by 2.
    assert hac < plain / 1.6
    assert np.isnan(newey_west_t(np.array([1.0, np.nan])))


def test_alpha_regression_recovers_alpha_and_beta():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.02, 2000)
    y = 0.003 + 0.5 * x + rng.normal(0, 0.01, 2000)
    r = alpha_regression(y, x)
    assert r["alpha"] == pytest.approx(0.003, abs=0.0006) and r["beta"] == pytest.approx(0.5, abs=0.03)
    assert r["alpha_t_nw"] > 8 and 0.4 < r["r2"] < 0.6 and r["n"] == 2000
    assert np.isnan(alpha_regression(y[:3], x[:3])["alpha"])


def test_compare_with_aligns_on_common_dates():
    d = pd.date_range("2000-01-07", periods=300, freq="W-FRI")
    rng = np.random.default_rng(3)
    o = pd.Series(rng.normal(0, 0.02, 300), index=d)
    m = (0.4 * o + 0.002 + rng.normal(0, 0.01, 300)).iloc[50:]
    out = compare_with(m, o, "week")
    assert out["n_periods"] == 250 and out["corr"] > 0.5
    assert out["alpha_ann"] == pytest.approx(out["alpha_ann"]) and out["beta"] == pytest.approx(0.4, abs=0.1)
