"""Calibration metrics (evaluate.calibration) and post-hoc calibration fits (train.calibration)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.calibration import (by_year, calibration_summary, expected_calibration_error,
                                           reliability_table)
from pipeline.train.calibration import apply_calibration, base_rate_logit, fit_calibration


def _calibrated_sample(n: int, seed: int = 0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(0, 0.6, n)))
    y = rng.random(n) < p
    ret = np.where(y, 0.01, -0.01)
    return np.clip(p + shift, 0, 1), ret


def test_a_calibrated_forecast_has_small_ece_and_a_shifted_one_does_not():
    p, ret = _calibrated_sample(200_000)
    tab = reliability_table(p, ret)
    assert len(tab) == 10 and tab["n"].sum() == len(p)
    assert (tab["n"] - len(p) / 10).abs().max() <= 1
    assert expected_calibration_error(tab) < 0.005
    assert np.all(np.diff(tab["p_mean"]) > 0)
    p2, _ = _calibrated_sample(200_000, shift=0.1)
    assert expected_calibration_error(reliability_table(p2, ret)) == pytest.approx(0.1, abs=0.01)


def test_missing_returns_are_dropped_and_ties_share_a_bin():
    p = np.r_[np.full(50, 0.5), np.linspace(0.6, 0.9, 50)]
    ret = np.r_[np.ones(100)]
    ret[0] = np.nan
    tab = reliability_table(p, ret)
    assert tab["n"].sum() == 99
    assert tab.iloc[0]["p_lo"] == tab.iloc[0]["p_hi"] == 0.5 and tab.iloc[0]["n"] == 49
    assert reliability_table(np.array([]), np.array([])).empty


def test_summary_and_by_year():
    p, ret = _calibrated_sample(20_000)
    dates = np.where(np.arange(len(p)) % 2, np.datetime64("2001-06-29"), np.datetime64("2002-06-28"))
    df = pd.DataFrame({"date": dates, "p_up": p, "ret": ret})
    s = calibration_summary(p, ret)
    assert s["share_up_pred"] == pytest.approx(np.mean(p > 0.5))
    assert s["share_up_realised"] == pytest.approx(np.mean(ret > 0))
    assert len(s["bins"]) == 10 and s["ece"] < 0.02
    y = by_year(df)
    assert y.index.tolist() == [2001, 2002] and y["n"].sum() == len(p)
    assert y.loc[2001, "accuracy"] == pytest.approx(np.mean(((p > 0.5) == (ret > 0))[1::2]))


@pytest.mark.parametrize("a,b", [(0.5, -0.3), (2.0, 0.4)])
def test_platt_recovers_a_known_miscalibration(a, b):
    rng = np.random.default_rng(1)
    d = rng.normal(0, 1.5, 100_000)
    y = (rng.random(len(d)) < 1 / (1 + np.exp(-(a * d + b)))).astype(float)
    cal = fit_calibration(d, y, "platt")
    assert cal["scale"] == pytest.approx(a, rel=0.05) and cal["shift"] == pytest.approx(b, abs=0.03)
    assert cal["loss_after"] < cal["loss_before"]
    t = fit_calibration(d, y, "temperature")
    assert t["shift"] == 0.0 and t["loss_before"] >= t["loss_after"] >= cal["loss_after"] - 1e-12
    none = fit_calibration(d, y, "none")
    assert (none["scale"], none["shift"]) == (1.0, 0.0) and none["loss_after"] == none["loss_before"]


def test_apply_calibration_maps_raw_probabilities():
    p = np.array([0.2, 0.5, 0.9])
    assert np.array_equal(apply_calibration(p, None), p)
    assert np.array_equal(apply_calibration(p, {"method": "none", "scale": 1.0, "shift": 0.0}), p)
    out = apply_calibration(p, {"method": "platt", "scale": 2.0, "shift": -1.0})
    d = np.log(p / (1 - p))
    assert np.allclose(out, 1 / (1 + np.exp(-(2 * d - 1))))
    assert base_rate_logit(np.array([1, 1, 1, 0])) == pytest.approx(np.log(3))


def test_fit_calibration_refuses_bad_input():
    with pytest.raises(ValueError, match="choose one of"):
        fit_calibration(np.zeros(3), np.zeros(3), "isotonic")
    with pytest.raises(ValueError, match="non-empty"):
        fit_calibration(np.zeros(0), np.zeros(0), "platt")
