"""Up or down, stated once: the label, a model's call, and the confusion-count metrics of the calls
(docs/method.md sections 3.2 and 7).

- Up = realised return > 0 (METHOD 3.2: a return of exactly 0 is "down"; a missing return is no
  label and is dropped before any metric).
- A classifier calls "up" when P(up) > ``P_UP_THRESHOLD`` (0.5) or, on logits, when the "up"
  logit is the larger (argmax; a tie is "down", as 0.5 is).
- A regression run calls "up" when its prediction > ``SIGN_THRESHOLD`` (0): exactly 0 is "down".
- Accuracy = (TP + TN) / n; MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)), 0 when a
  margin is empty; positive = up.

The training loop (torch tensors, counts summed over batches and ranks) and the evaluation stage
(numpy arrays) both use these functions; this module imports nothing of the pipeline.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

P_UP_THRESHOLD = 0.5  # a classifier's "up": P(up) above it
SIGN_THRESHOLD = 0.0  # a regression's "up": prediction above it

ArrayLike = TypeVar("ArrayLike")  # a numpy array or a torch tensor: anything comparing with a float


def classifier_up(p_up: ArrayLike) -> ArrayLike:
    """A classifier's call from its probability: ``p_up > P_UP_THRESHOLD`` (0.5), elementwise."""
    return p_up > P_UP_THRESHOLD


def predicted_up(pred: ArrayLike) -> ArrayLike:
    """The one rule for "predicted up" of a regression run: ``pred > SIGN_THRESHOLD`` (= 0),
    elementwise; bool of the input's shape (a numpy array or a torch tensor: anything that
    compares with a float). A prediction of exactly 0 is "down", as ``ret == 0`` is a "down"
    label (METHOD 3.2)."""
    return pred > SIGN_THRESHOLD


def confusion_counts(called_up: Any, up: Any) -> tuple[int, int, int, int]:
    """(TP, TN, FP, FN) of boolean calls against boolean truths of the same shape (numpy arrays
    or torch tensors; positive = up)."""
    return (int((called_up & up).sum()), int((~called_up & ~up).sum()),
            int((called_up & ~up).sum()), int((~called_up & up).sum()))


def confusion_metrics(tp: float, tn: float, fp: float, fn: float) -> dict[str, float]:
    """{"accuracy", "mcc", "share_up_pred"} from confusion counts (module docstring): all NaN
    when there is no row; MCC 0 when a margin is empty."""
    n = tp + tn + fp + fn
    if not n:
        return {"accuracy": float("nan"), "mcc": float("nan"), "share_up_pred": float("nan")}
    den = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
    return {"accuracy": float(tp + tn) / n,
            "mcc": (float(tp) * tn - float(fp) * fn) / den if den > 0 else 0.0,
            "share_up_pred": float(tp + fp) / n}


def paired(pred: Any, ret: Any, what: str = "prediction") -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``ret`` as float64 (n,) arrays without the rows whose return is missing (NaN).

    A shape mismatch, or a NaN ``pred`` on a row with a return, is a ValueError naming ``what``
    and the first such row (a missing prediction is a defect upstream, never dropped silently).
    """
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ret, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"{what} has shape {p.shape} but ret has {r.shape}")
    keep = ~np.isnan(r)
    if np.isnan(p[keep]).any():
        i = int(np.flatnonzero(keep & np.isnan(p))[0])
        raise ValueError(f"{what} is NaN at row {i} (with a non-missing return)")
    return p[keep], r[keep]
