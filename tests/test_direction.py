"""The one up/down rule and the confusion-count metrics (pipeline.direction)."""

import math

import numpy as np
import pytest
import torch

from pipeline.direction import (classifier_up, confusion_counts, confusion_metrics, paired,
                                predicted_up)
from pipeline.train.loop import binary_metrics


def test_confusion_metrics_by_hand() -> None:
    called = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    up = np.array([1, 0, 0, 1, 1, 0], dtype=bool)
    assert confusion_counts(called, up) == (2, 2, 1, 1)
    m = confusion_metrics(2, 2, 1, 1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["mcc"] == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    assert m["share_up_pred"] == pytest.approx(0.5)
    assert confusion_metrics(3, 0, 2, 0)["mcc"] == 0.0  # nothing called down: an empty margin
    assert all(math.isnan(v) for v in confusion_metrics(0, 0, 0, 0).values())


def test_torch_and_numpy_count_alike_and_the_loop_uses_the_same_metrics() -> None:
    rng = np.random.default_rng(0)
    logit = rng.normal(size=500)
    ret = rng.normal(size=500)
    ret[::7] = 0.0  # a zero return is "down"
    n_counts = confusion_counts(predicted_up(logit), ret > 0)
    t_counts = confusion_counts(predicted_up(torch.from_numpy(logit)), torch.from_numpy(ret) > 0)
    assert n_counts == t_counts
    acc, mcc, diff = binary_metrics(*n_counts)
    m = confusion_metrics(*n_counts)
    assert (acc, mcc) == (m["accuracy"], m["mcc"])
    assert diff == pytest.approx(np.mean(logit > 0) - np.mean(logit <= 0))


def test_ties_are_down() -> None:
    assert not predicted_up(np.array([0.0]))[0]
    assert not classifier_up(np.array([0.5]))[0]
    assert classifier_up(np.array([0.5000001]))[0]


def test_paired_drops_missing_returns_and_refuses_missing_predictions() -> None:
    p, r = paired([0.1, 0.2, np.nan], [1.0, np.nan, np.nan])
    assert p.tolist() == [0.1] and r.tolist() == [1.0]
    with pytest.raises(ValueError, match="p_up is NaN at row 1"):
        paired([0.1, np.nan], [1.0, 2.0], "p_up")
    with pytest.raises(ValueError, match="shape"):
        paired([0.1], [1.0, 2.0])
