"""Saliency maps: the input gradient and guided backpropagation of the ensemble log-odds.

Both are maps of ``d s / d v`` (N, H, 3W) where ``s`` is :class:`~pipeline.interpret.scoring
.EnsembleScore` (log-odds of the calibrated ensemble P(up)) and ``v`` the image in pixel units
(0..255): a positive value means that brightening that pixel raises P(up). Guided backpropagation
(Springenberg et al. 2015) changes only the backward pass of every activation: the gradient flows
through a unit only where its input was positive AND the incoming gradient is positive, which gives
sharper, class-specific maps (it is not the gradient of anything: no finite-difference identity).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from pipeline.interpret.scoring import EnsembleScore


def input_gradient(score: EnsembleScore, v: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Gradient of the log-odds of P(up) with respect to each pixel, float64 (N, H, 3W), in
    log-odds per pixel unit. ``v``: float (N, H, 3W) pixel images on the score's device."""
    out = []
    for s in range(0, len(v), batch_size):
        x = v[s:s + batch_size].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            # Images are independent in eval mode: d(sum_n s_n)/dv_n = d s_n / d v_n.
            (g,) = torch.autograd.grad(score(x).sum(), x)
        out.append(g.double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *v.shape[1:]))


class _GuidedFn(torch.autograd.Function):
    """ReLU-family forward (the original activation's values), guided backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        return y.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).to(g.dtype), None


class GuidedActivation(nn.Module):
    """Wraps an activation: same forward values, guided-backpropagation gradient."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedFn.apply(x, self.act(x).detach())


def guided_copy(score: EnsembleScore) -> EnsembleScore:
    """A deep copy of ``score`` whose members' block activations are :class:`GuidedActivation`."""
    g = copy.deepcopy(score)
    for m in g.members:
        for b in m.blocks:
            if not isinstance(b.act, GuidedActivation):
                b.act = GuidedActivation(b.act)
    return g.eval()


def guided_backprop(score: EnsembleScore, v: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Guided-backpropagation map of the log-odds of P(up), float64 (N, H, 3W) (module docstring).
    ``score`` is not modified (a guided copy is used)."""
    return input_gradient(guided_copy(score), v, batch_size)
