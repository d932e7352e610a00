"""Class-model images: the chart the network finds most "up" (or "down"), by regularised gradient
ascent on the input (Simonyan et al. 2014), with the image-space regularisers of Yosinski et al.
(2015, "Understanding neural networks through deep visualization").

For class c in {up, down} with sign sigma = +1 / -1, maximise over pixel images v in [0, 255]

    J(v) = sigma * s(v) - l2 * mean((v/255)^2) - tv * mean(|grad_x v/255| + |grad_y v/255|)

where s is the log-odds of the ensemble P(up) (:mod:`pipeline.interpret.scoring`). The start is the
blank chart (all 0) plus the same small seeded noise for both classes, so the two images differ
only by the class. Each step, in this order:

1. **Jitter**: the gradient of J is taken at the image shifted by a seeded random offset of up to
   ``jitter`` pixels in each direction (wrapping around), so no pattern that works at a single
   pixel position only (an adversarial texture) is rewarded;
2. an **Adam** step of ``lr`` pixel units on that gradient;
3. **L2 decay**: every pixel loses the fraction ``decay`` of its value (it drifts back to the
   background unless the gradient keeps it lit);
4. every ``blur_every`` steps: **small-contribution clipping** (lit pixels whose contribution
   ``|v * dJ/dv|`` is among the lowest ``contrib_clip`` share of the lit pixels are set to 0), a
   **Gaussian blur** of ``blur_sigma`` pixels, then **small-value clipping** (pixels below ``clip``
   times the image's largest value are set to 0: the faint haze ascent leaves everywhere);
5. clipping to the valid pixel range [0, 255].

The two regularisers inside J act on the gradient at a scale far below that of s on a chart of
thousands of pixels; 3-4 act on the image directly and are what removes the noise. With
``decay = blur_every = clip = contrib_clip = jitter = 0`` this is the plain regularised ascent of
Simonyan et al. Deterministic for a given seed (the jitter offsets come from a seeded generator);
cost: ``steps`` forward/backward passes of the two images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.interpret.scoring import EnsembleScore

# Image-space regularisers (Yosinski et al. 2015 use decay 0-0.3, blur every 4-10 steps with sigma
# 0.3-1, pixel clipping by value and by contribution); chosen on the demo's I20 model so that the
# images are sparse strokes rather than noise while P(up) still moves as far as without them.
DECAY = 0.002
BLUR_EVERY = 8
BLUR_SIGMA = 0.5
CLIP = 0.1
CONTRIB_CLIP = 0.1
JITTER = 1


def gaussian_blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images (N, H, W) with standard deviation ``sigma`` pixels (kernel
    radius ceil(3 sigma), weights summing to 1, edges padded by replication so the border does not
    darken); ``sigma <= 0`` returns ``v`` unchanged."""
    if sigma <= 0:
        return v
    r = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=v.dtype, device=v.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(v[:, None], (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def _tv(u: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute vertical plus horizontal neighbour difference of images u (N, H, W)."""
    return ((u[:, 1:, :] - u[:, :-1, :]).abs().mean(dim=(1, 2))
            + (u[:, :, 1:] - u[:, :, :-1]).abs().mean(dim=(1, 2)))


def total_variation(images: np.ndarray) -> np.ndarray:
    """The tv term of J for pixel images (N, H, W): the mean absolute vertical plus horizontal
    neighbour difference on the 0..1 scale (u = v/255), float64 (N,); 0 for a flat image, about
    0.67 for uniform noise in [0, 255]."""
    return _tv(torch.as_tensor(np.asarray(images, dtype=np.float64) / 255.0)).numpy()


def _start(shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    # A faint start (uniform in [0, 2) pixel units): gradients see every pixel.
    return torch.rand((1, *shape), generator=gen) * 2.0


def start_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The image both ascents start from, float64 (H, W) in pixel units: the blank chart plus the
    seeded faint noise :func:`class_model_images` draws first for ``seed``."""
    return _start(shape, torch.Generator().manual_seed(seed))[0].double().numpy()


def class_model_images(score: EnsembleScore, shape: tuple[int, int], steps: int, lr: float,
                       l2: float, tv: float, seed: int = 0, *, decay: float = DECAY,
                       blur_every: int = BLUR_EVERY, blur_sigma: float = BLUR_SIGMA, clip: float = CLIP,
                       contrib_clip: float = CONTRIB_CLIP, jitter: int = JITTER
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-model images for "up" and "down" (module docstring).

    Args:
        score: the explained ensemble; shape: (H, 3W) of its images; steps: ascent steps; lr: Adam
            step in pixel units; l2, tv: weights of the regularisers inside J; seed: the start's
            noise and the jitter offsets. Keyword-only: the image-space regularisers (0 turns one
            off): decay (fraction per step), blur_every (steps), blur_sigma (pixels), clip
            (fraction of the image's maximum), contrib_clip (share of the lit pixels), jitter
            (pixels).

    Returns:
        (images float64 (2, H, W) in [0, 255] for ["up", "down"], final P(up) (2,), objective J per
        step float64 (2, steps), evaluated at that step's jittered image before its update).
    """
    dev = score.scale.device
    gen = torch.Generator().manual_seed(seed)
    v0 = _start(shape, gen)
    v = v0.repeat(2, 1, 1).to(dev).requires_grad_(True)
    sigma = torch.tensor([1.0, -1.0], device=dev)
    opt = torch.optim.Adam([v], lr=lr)
    trace = np.empty((2, steps))
    for t in range(steps):
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist() if jitter > 0
                  else (0, 0))
        opt.zero_grad()
        with torch.enable_grad():
            vj = torch.roll(v, shifts=(dy, dx), dims=(1, 2)) if (dy or dx) else v
            u = vj / 255.0
            j = sigma * score(vj).to(v.dtype) - l2 * (u ** 2).mean(dim=(1, 2)) - tv * _tv(u)
            (-j.sum()).backward()
        grad = -v.grad.detach()  # dJ/dv, for the contribution clip
        opt.step()
        with torch.no_grad():
            if decay > 0:
                v.mul_(1.0 - decay)
            if blur_every > 0 and (t + 1) % blur_every == 0:
                if contrib_clip > 0:  # before the blur, which closes the holes it leaves in a stroke
                    _clip_contributions(v, grad, contrib_clip)
                v.copy_(gaussian_blur(v, blur_sigma))
                if clip > 0:
                    peak = v.amax(dim=(1, 2), keepdim=True)
                    v.masked_fill_(v < clip * peak, 0.0)
            v.clamp_(0.0, 255.0)
        trace[:, t] = j.detach().double().cpu().numpy()
    with torch.no_grad():
        p = score.p_up(v).double().cpu().numpy()
    return v.detach().double().cpu().numpy(), p, trace


def _clip_contributions(v: torch.Tensor, grad: torch.Tensor, share: float) -> None:
    """In place: per image, set to 0 the lit pixels (v > 0) whose contribution |v * grad| is below
    the ``share`` quantile of the lit pixels' contributions (images (N, H, W), grad the same)."""
    c = (v * grad).abs()
    lit = v > 0
    for i in range(v.shape[0]):  # two images: a quantile each
        if int(lit[i].sum()) < 2:
            continue
        q = torch.quantile(c[i][lit[i]].float(), share).to(c.dtype)
        v[i].masked_fill_(lit[i] & (c[i] < q), 0.0)
