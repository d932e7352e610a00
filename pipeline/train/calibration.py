"""Post-hoc calibration of a member's P(up), fitted on that member's own validation split.

    validation_logits(model, ds, rt) -> (d, y)      logit differences z_up - z_down and labels
    fit_calibration(d, y, method) -> dict           the calibration.json content
    apply_calibration(p_raw, cal) -> p              calibrated P(up) from the member's raw P(up)

Methods (``train.calibration``): ``none`` (the paper: P = softmax of the logits); ``temperature``
(P = sigmoid(d / T), one scale); ``platt`` (P = sigmoid(a d + b), scale and shift). Both minimise the
mean cross-entropy on the member's validation images (in-sample data the member did not train on),
so nothing from the test years enters. A monotone map per member leaves each member's ranking, and
so its decile sorts, unchanged; it moves the 0.5 threshold (accuracy, share predicted up) and the
loss. Why it matters: with a few thousand training images, training stops while the head is still
far from calibrated (its initial logits are large), and the paper's 0.5 threshold then predicts
"up" for most images.
"""

from __future__ import annotations

import typing
import math

import numpy as np
import torch

from pipeline.config import Calibration

CALIBRATIONS: tuple[str, ...] = typing.get_args(Calibration)
# Raw P(up) is clipped to this distance from 0 and 1 before taking its logit.
P_CLIP = 1e-12


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of logits z (n,) against labels y in {0, 1} (n,), computed stably."""
    s = np.where(y > 0, -z, z)
    return float(np.mean(np.logaddexp(0.0, s)))


def fit_calibration(d: np.ndarray, y: np.ndarray, method: str, max_iter: int = 100) -> dict:
    """Fit ``method`` to logit differences d (n,) float and labels y (n,) in {0, 1}.

    Newton's method on the convex cross-entropy in (scale, shift) (shift fixed at 0 for
    temperature), with step halving so the loss never increases. Returns {"method", "scale",
    "shift", "n", "loss_before", "loss_after"} (losses: mean validation cross-entropy, nats).
    """
    if method not in CALIBRATIONS:
        raise ValueError(f"train.calibration {method!r}: choose one of {list(CALIBRATIONS)}")
    d = np.asarray(d, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if d.shape != y.shape or d.ndim != 1 or len(d) == 0:
        raise ValueError(f"fit_calibration: d {d.shape} and y {y.shape} must be 1-D, equal, non-empty")
    before = _bce(d, y)
    theta = np.array([1.0, 0.0])
    if method != "none":
        free = [0, 1] if method == "platt" else [0]
        X = np.column_stack([d, np.ones_like(d)])[:, free]
        loss = before
        for _ in range(max_iter):
            z = X @ theta[free]
            p = 1.0 / (1.0 + np.exp(-z))
            grad = X.T @ (p - y) / len(y)
            hess = (X * (p * (1 - p))[:, None]).T @ X / len(y) + 1e-12 * np.eye(len(free))
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while t > 1e-8:
                cand = theta.copy()
                cand[free] -= t * step
                new = _bce(X @ cand[free], y)
                if new <= loss:
                    break
                t /= 2
            if t <= 1e-8:
                break
            theta, improved, loss = cand, loss - new, new
            if improved < 1e-12 and np.max(np.abs(t * step)) < 1e-9:
                break
    after = _bce(theta[0] * d + theta[1], y)
    return {"method": method, "scale": float(theta[0]), "shift": float(theta[1]), "n": int(len(d)),
            "loss_before": before, "loss_after": after}


def apply_calibration(p_raw: np.ndarray, cal: dict | None) -> np.ndarray:
    """Calibrated P(up) = sigmoid(scale * logit(p_raw) + shift), float64 (n,); p_raw unchanged when
    ``cal`` is None or its method is ``none``. logit(softmax P) is the logit difference d."""
    p = np.asarray(p_raw, dtype=np.float64)
    if cal is None or cal["method"] == "none":
        return p
    pc = np.clip(p, P_CLIP, 1 - P_CLIP)
    z = cal["scale"] * (np.log(pc) - np.log1p(-pc)) + cal["shift"]
    return 1.0 / (1.0 + np.exp(-z))


def validation_logits(model: torch.nn.Module, loader: torch.utils.data.DataLoader, rt) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(d, y): logit differences z_up - z_down (float64 (n,)) and labels (int64 (n,)) of the
    model in eval mode over ``loader``, under the runtime's device and precision."""
    model.eval()
    ds, ys = [], []
    with torch.inference_mode():
        for x, y in loader:
            x = x.to(rt.device)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with rt.autocast():
                logits = model(x)
            lg = logits.float()
            ds.append((lg[:, 1] - lg[:, 0]).cpu().numpy().astype(np.float64))
            ys.append(y.numpy().astype(np.int64))
    if not ds:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(ds), np.concatenate(ys)


def base_rate_logit(labels: np.ndarray) -> float:
    """log(q / (1 - q)) of the share q of up labels (clipped to [1e-3, 1 - 1e-3])."""
    q = float(np.clip(np.mean(np.asarray(labels) == 1), 1e-3, 1 - 1e-3)) if len(labels) else 0.5
    return math.log(q / (1 - q))
