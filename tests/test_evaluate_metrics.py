"""Pooled classification metrics and per-date correlations against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.metrics import classification_metrics, correlations_by_date, mean_correlations


def test_classification_metrics_by_hand():
    p = np.array([.9, .6, .4, .2, .7, .5])
    r = np.array([.1, -.05, -.02, .03, np.nan, 0.0])
    m = classification_metrics(p, r)
    # Row 4 (missing return) is dropped. y = [1, 0, 0, 1, 0] (r = 0 is "down");
    # pred = 1[P > .5] = [1, 1, 0, 0, 0] (P = .5 is "down").
    # TP = 1 (row 0), FP = 1 (row 1), TN = 2 (rows 2, 5), FN = 1 (row 3).
    assert m["n"] == 5
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(3 / 5, abs=1e-15)
    # MCC = (1*2 - 1*1) / sqrt((1+1)(1+1)(2+1)(2+1)) = 1/6
    assert m["mcc"] == pytest.approx(1 / 6, abs=1e-15)
    # loss = -(log .9 + log(1-.6) + log(1-.4) + log .2 + log(1-.5)) / 5 = 0.76701238...
    expect = -(math.log(.9) + math.log(.4) + math.log(.6) + math.log(.2) + math.log(.5)) / 5
    assert m["loss"] == pytest.approx(expect, rel=1e-12)
    assert m["loss"] == pytest.approx(0.7670124, abs=1e-7)


def test_mcc_degenerate_and_errors():
    # Every prediction "up": a margin is empty -> MCC defined as 0.
    m = classification_metrics(np.array([.7, .8]), np.array([.1, -.1]))
    assert m["mcc"] == 0.0 and m["accuracy"] == .5
    with pytest.raises(ValueError, match="NaN at row 1"):
        classification_metrics(np.array([.7, np.nan]), np.array([.1, -.1]))
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.array([.7]), np.array([.1, -.1]))


def test_correlations_per_date_with_ties():
    d1, d2, d3 = pd.to_datetime(["2001-01-31", "2001-02-28", "2001-03-30"])
    df = pd.DataFrame({
        "date": [d1] * 4 + [d2] * 3 + [d3] * 3 + [d1],
        "p_up": [1, 2, 2, 3] + [1, 2, 3] + [5, 5, 5] + [9],
        "ret": [10, 20, 40, 100] + [3, 2, 1] + [1, 2, 3] + [np.nan],  # last row: missing return
    })
    c = correlations_by_date(df)
    # d1: ranks x = 1, 2.5, 2.5, 4 (ties share the mean rank), ranks y = 1, 2, 3, 4.
    #   centred: dx = -1.5, 0, 0, 1.5; dy = -1.5, -.5, .5, 1.5; sum dx dy = 4.5,
    #   sum dx^2 = 4.5, sum dy^2 = 5 -> spearman = 4.5 / sqrt(22.5) = sqrt(.9).
    #   Pearson: dx = -1, 0, 0, 1; y mean 42.5, dy = -32.5, -22.5, -2.5, 57.5;
    #   sum dx dy = 90, sum dx^2 = 2, sum dy^2 = 4875 -> 90 / sqrt(9750).
    assert c.loc[d1, "n"] == 4
    assert c.loc[d1, "spearman"] == pytest.approx(math.sqrt(.9), rel=1e-12)
    assert c.loc[d1, "pearson"] == pytest.approx(90 / math.sqrt(9750), rel=1e-12)
    # d2: perfectly decreasing -> -1 and -1.  d3: constant signal -> undefined (NaN).
    assert c.loc[d2, "spearman"] == pytest.approx(-1, abs=1e-12)
    assert c.loc[d2, "pearson"] == pytest.approx(-1, abs=1e-12)
    assert np.isnan(c.loc[d3, "spearman"]) and np.isnan(c.loc[d3, "pearson"])
    m = mean_correlations(c)
    assert m["spearman"] == pytest.approx((math.sqrt(.9) - 1) / 2, rel=1e-12)
    assert m["pearson"] == pytest.approx((90 / math.sqrt(9750) - 1) / 2, rel=1e-12)
    assert (m["n_dates"], m["n_dates_undefined"]) == (2, 1)


def test_accuracy_cluster_se_grows_with_within_date_correlation():
    from pipeline.evaluate.metrics import accuracy_cluster_se

    rng = np.random.default_rng(0)
    n_dates, per = 200, 50
    dates = np.repeat(np.arange(n_dates), per)
    p = np.full(n_dates * per, 0.6)  # always predicts up
    indep = rng.normal(size=n_dates * per)
    se_indep = accuracy_cluster_se(p, indep, dates)
    a = np.mean(indep > 0)
    assert se_indep == pytest.approx(np.sqrt(a * (1 - a) / len(p)), rel=0.2)
    common = np.repeat(rng.normal(size=n_dates), per) + 0.3 * indep  # a shared move per date
    assert accuracy_cluster_se(p, common, dates) > 4 * se_indep
    assert np.isnan(accuracy_cluster_se(p[:5], indep[:5], dates[:5]))
