"""Class-model images: the chart the network finds most "up" (or "down"), by regularised gradient
ascent on the input (Simonyan et al. 2014).

For class c in {up, down} with sign sigma = +1 / -1, maximise over pixel images v in [0, 255]

    J(v) = sigma * s(v) - l2 * mean((v/255)^2) - tv * mean(|grad_x v/255| + |grad_y v/255|)

where s is the log-odds of the ensemble P(up) (:mod:`pipeline.interpret.scoring`). Adam steps of
``lr`` pixel units, each followed by clipping to [0, 255]; the start is the blank chart (all 0)
plus the same small seeded noise for both classes, so the two images differ only by the class.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.interpret.scoring import EnsembleScore


def class_model_images(score: EnsembleScore, shape: tuple[int, int], steps: int, lr: float,
                       l2: float, tv: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (images float64 (2, H, W) in [0, 255] for ["up", "down"], final P(up) (2,),
    objective J per step float64 (2, steps))."""
    dev = score.scale.device
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.rand((1, *shape), generator=gen) * 2.0  # a faint start: gradients see every pixel
    v = v0.repeat(2, 1, 1).to(dev).requires_grad_(True)
    sigma = torch.tensor([1.0, -1.0], device=dev)
    opt = torch.optim.Adam([v], lr=lr)
    trace = np.empty((2, steps))
    for t in range(steps):
        opt.zero_grad()
        with torch.enable_grad():
            u = v / 255.0
            reg_l2 = (u ** 2).mean(dim=(1, 2))
            reg_tv = ((u[:, 1:, :] - u[:, :-1, :]).abs().mean(dim=(1, 2))
                      + (u[:, :, 1:] - u[:, :, :-1]).abs().mean(dim=(1, 2)))
            j = sigma * score(v).to(v.dtype) - l2 * reg_l2 - tv * reg_tv
            (-j.sum()).backward()
        opt.step()
        with torch.no_grad():
            v.clamp_(0.0, 255.0)
        trace[:, t] = j.detach().double().cpu().numpy()
    with torch.no_grad():
        p = score.p_up(v).double().cpu().numpy()
    return v.detach().double().cpu().numpy(), p, trace
