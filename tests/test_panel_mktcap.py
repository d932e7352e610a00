"""The market-cap proxy of METHOD 3.5: trailing mean of close*volume, hand-computed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.panel.mktcap import dollar_volume_proxy, proxy_min_periods, segment_starts


def test_min_periods_rule():
    assert proxy_min_periods(60) == 20
    assert proxy_min_periods(3) == 1
    assert proxy_min_periods(4) == 2
    with pytest.raises(ValueError, match="mktcap_proxy_window"):
        proxy_min_periods(0)


def test_window_stock_boundaries_and_missing_volume():
    # Stock A: 5 records, stock B: 3 records; window 3, at least 2 present values.
    close = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0])
    vol = np.array([10.0, np.nan, 10.0, 10.0, 10.0, 1.0, 1.0, np.nan])
    starts = segment_starts(np.array([7, 7, 7, 7, 7, 9, 9, 9]))
    assert starts.tolist() == [0, 5]
    out = dollar_volume_proxy(close, vol, starts, window=3, min_periods=2)
    # A: dv = 10, NaN, 30, 40, 50 -> windows {10}, {10,NaN}, {10,NaN,30}, {NaN,30,40}, {30,40,50}
    # B: dv = 10, 20, NaN -> {10}, {10,20}, {10,20,NaN}: never reaches back into A.
    expected = [np.nan, np.nan, 20.0, 35.0, 40.0, np.nan, 15.0, 15.0]
    np.testing.assert_allclose(out, expected, rtol=1e-15, equal_nan=True)


def test_default_window_matches_pandas_rolling_per_stock():
    rng = np.random.default_rng(3)
    n1, n2 = 150, 90
    close = rng.uniform(1, 100, n1 + n2)
    vol = rng.uniform(0, 1e6, n1 + n2)
    vol[rng.random(n1 + n2) < 0.2] = np.nan
    g = np.r_[np.zeros(n1, int), np.ones(n2, int)]
    out = dollar_volume_proxy(close, vol, segment_starts(g), window=60)
    ref = (pd.Series(close * vol).groupby(g).rolling(60, min_periods=20).mean()
           .reset_index(level=0, drop=True).to_numpy())
    np.testing.assert_allclose(out, ref, rtol=1e-10, equal_nan=True)
    assert np.isnan(out[:19]).all()  # fewer than 20 records, let alone 20 present values
