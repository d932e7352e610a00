"""Adversarial robustness: the smallest L-infinity pixel change that flips a prediction.

Prediction = the sign of the log-odds s of the calibrated ensemble P(up) (up when P(up) > 0.5).
The attack moves s toward the other side: direction ``delta = -sign(s(v)) * sign(grad_v s)``.
Pixels are in image units (0..255) and every attacked image is clipped back to [0, 255].

* **FGSM** (one step): ``v' = clip(v + eps * delta)``. For each image the flip point is the
  smallest eps of the grid whose attack flips it, refined by ``bisect_steps`` bisections between
  that grid value and the one below (0 below the first): ``fgsm_eps`` is the upper end of the
  final bracket (the attack there flips the prediction), ``fgsm_eps_below`` its lower end (there it
  does not). NaN when no grid value flips the image.
* **PGD** (``steps`` steps of size 2.5 eps / steps, each projected back onto the eps-ball around v
  and onto [0, 255]): ``pgd_eps`` is the smallest grid eps that flips the image; a stronger attack,
  so at every eps it flips at least about as many images as FGSM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.interpret.scoring import EnsembleScore


def _score(score: EnsembleScore, v: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([score(v[s:s + batch_size]) for s in range(0, len(v), batch_size)])


def _grad_sign(score: EnsembleScore, v: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for s in range(0, len(v), batch_size):
        x = v[s:s + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(score(x).sum(), x)
        out.append(torch.sign(g))
    return torch.cat(out)


def fgsm(v: torch.Tensor, direction: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """clip(v + eps * direction, 0, 255); eps a scalar or (N,) per image."""
    e = torch.as_tensor(eps, dtype=v.dtype, device=v.device)
    if e.ndim == 1:
        e = e[:, None, None]
    return (v + e * direction).clamp(0.0, 255.0)


def attack_direction(score: EnsembleScore, v: torch.Tensor, batch_size: int = 256
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(direction (N, H, W) in {-1, 0, 1}, predicted up (N,) bool) of the FGSM attack."""
    s0 = _score(score, v, batch_size)
    up = s0 > 0
    sgn = torch.where(up, -1.0, 1.0).to(v.dtype)
    return sgn[:, None, None] * _grad_sign(score, v, batch_size), up


def fgsm_flip_points(score: EnsembleScore, v: torch.Tensor, epsilons: Sequence[float],
                     bisect_steps: int = 6, batch_size: int = 256) -> pd.DataFrame:
    """Per image: predicted_up, fgsm_eps, fgsm_eps_below (module docstring); plus one column
    ``flip_<eps>`` (bool) per grid value."""
    eps = np.asarray(epsilons, dtype=np.float64)
    direction, up = attack_direction(score, v, batch_size)
    flips = np.zeros((len(v), len(eps)), dtype=bool)
    for k, e in enumerate(eps):
        flips[:, k] = ((_score(score, fgsm(v, direction, float(e)), batch_size) > 0) != up).cpu().numpy()
    any_flip = flips.any(axis=1)
    first = np.where(any_flip, flips.argmax(axis=1), 0)
    hi = np.where(any_flip, eps[first], np.nan)
    lo = np.where(any_flip, np.where(first > 0, eps[np.maximum(first - 1, 0)], 0.0), np.nan)
    idx = np.flatnonzero(any_flip)
    if idx.size:
        sub_v, sub_d, sub_up = v[idx], direction[idx], up[idx]
        a, b = lo[idx].copy(), hi[idx].copy()
        for _ in range(bisect_steps):
            mid = (a + b) / 2
            f = ((_score(score, fgsm(sub_v, sub_d, torch.as_tensor(mid, dtype=v.dtype, device=v.device)),
                         batch_size) > 0) != sub_up).cpu().numpy()
            b = np.where(f, mid, b)
            a = np.where(f, a, mid)
        lo[idx], hi[idx] = a, b
    out = pd.DataFrame({"predicted_up": up.cpu().numpy(), "fgsm_eps": hi, "fgsm_eps_below": lo})
    for k, e in enumerate(eps):
        out[f"flip_{e:g}"] = flips[:, k]
    return out


def pgd_flips(score: EnsembleScore, v: torch.Tensor, epsilons: Sequence[float], steps: int = 10,
              batch_size: int = 256) -> np.ndarray:
    """bool (N, len(epsilons)): does PGD at each eps flip each image's prediction."""
    up = _score(score, v, batch_size) > 0
    sgn = torch.where(up, -1.0, 1.0).to(v.dtype)[:, None, None]
    out = np.zeros((len(v), len(epsilons)), dtype=bool)
    for k, e in enumerate(epsilons):
        alpha = 2.5 * float(e) / steps
        x = v.clone()
        for _ in range(steps):
            x = (x + alpha * sgn * _grad_sign(score, x, batch_size))
            x = torch.max(torch.min(x, v + e), v - e).clamp(0.0, 255.0)
        out[:, k] = ((_score(score, x, batch_size) > 0) != up).cpu().numpy()
    return out


def flip_curve(flips: np.ndarray, epsilons: Sequence[float], attack: str) -> pd.DataFrame:
    """Share of images flipped at each eps: columns attack, eps, share_flipped, n."""
    f = np.asarray(flips, dtype=bool)
    return pd.DataFrame({"attack": attack, "eps": np.asarray(epsilons, dtype=np.float64),
                         "share_flipped": f.mean(axis=0) if len(f) else np.nan, "n": len(f)})


def min_grid_eps(flips: np.ndarray, epsilons: Sequence[float]) -> np.ndarray:
    """(N,) smallest grid eps with a flip, NaN where none."""
    eps = np.asarray(epsilons, dtype=np.float64)
    f = np.asarray(flips, dtype=bool)
    return np.where(f.any(axis=1), eps[f.argmax(axis=1)], np.nan)
