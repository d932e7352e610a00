"""The differentiable quantity every method explains: the ensemble's log-odds of P(up).

The pipeline's reported P(up) (pipeline.predict) is the mean over members of each member's
calibrated probability ``sigmoid(scale_j * d_j + shift_j)``, with ``d_j = z_up - z_down`` the member's
logit difference (``scale = 1, shift = 0`` for an uncalibrated member, pipeline.train.calibration).
:class:`EnsembleScore` computes exactly that, in torch, from pixel-valued input, so gradients,
occlusion effects and adversarial flips all refer to the P(up) the evaluation sorts on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# Log-odds are taken of P(up) clipped to [P_EPS, 1 - P_EPS] so a saturated member stays finite.
P_EPS = 1e-6


class EnsembleScore(nn.Module):
    """``forward(v) -> log-odds of the ensemble P(up)``, (N,) float, for pixel images v.

    Args:
        members: ChartCNN-like modules returning logits (N, 2); used in eval mode.
        calibrations: one dict per member with "scale" and "shift" (method "none" = identity), or None.
        mean, std: the run's normalisation: the network sees ``(v / 255 - mean) / std``.

    ``v`` is float (N, H, 3W) or (N, 1, H, 3W) in pixel units (0 background .. 255 ink; values in
    between are allowed, which is what gradients and adversarial steps need).
    """

    def __init__(self, members: Sequence[nn.Module], calibrations: Sequence[dict] | None,
                 mean: float, std: float) -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("EnsembleScore needs at least one member")
        self.members = nn.ModuleList(members)
        cals = list(calibrations) if calibrations is not None else [{"method": "none"}] * len(members)
        if len(cals) != len(members):
            raise ValueError(f"{len(cals)} calibrations for {len(members)} members")
        scale = [1.0 if c.get("method", "none") == "none" else float(c["scale"]) for c in cals]
        shift = [0.0 if c.get("method", "none") == "none" else float(c["shift"]) for c in cals]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float64))
        self.mean, self.std = float(mean), float(std)
        self.eval()

    def normalise(self, v: torch.Tensor) -> torch.Tensor:
        """Pixel values -> network input (N, 1, H, 3W) (the same affine map as train.data.normalise)."""
        if v.ndim == 3:
            v = v[:, None]
        return (v / 255.0 - self.mean) / self.std

    def p_up(self, v: torch.Tensor) -> torch.Tensor:
        """(N,) ensemble P(up): the mean of the members' calibrated probabilities."""
        x = self.normalise(v)
        dtype = next(self.members[0].parameters()).dtype
        x = x.to(dtype)
        ps = []
        for j, m in enumerate(self.members):
            z = m(x)
            d = (z[:, 1] - z[:, 0]).to(self.scale.dtype)
            ps.append(torch.sigmoid(self.scale[j] * d + self.shift[j]))
        return torch.stack(ps).mean(0)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        p = self.p_up(v).clamp(P_EPS, 1 - P_EPS)
        return torch.log(p) - torch.log1p(-p)


def to_pixels(images: np.ndarray, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, H, 3W) -> float tensor of the same shape in pixel units 0..255."""
    a = np.asarray(images)
    if a.ndim != 3:
        raise ValueError(f"images must be (N, H, W); got {a.shape}")
    return torch.as_tensor(a.astype(np.float32), device=device).to(dtype)


def predict_p_up(score: EnsembleScore, images: np.ndarray | torch.Tensor, batch_size: int = 256
                 ) -> np.ndarray:
    """(N,) float64 ensemble P(up) of pixel images (uint8 array or float tensor), batched."""
    out = []
    dev = score.scale.device
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            b = images[s:s + batch_size]
            v = b.to(dev) if isinstance(b, torch.Tensor) else to_pixels(b, dev)
            out.append(score.p_up(v).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
