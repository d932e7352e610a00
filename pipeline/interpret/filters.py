"""First-layer filters of a ChartCNN: the 1-channel kernels that look at raw pixels."""

from __future__ import annotations

import numpy as np
from torch import nn


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """float32 (C, kh, kw): the first conv's weights (input channel 0), in the model's own units
    (they act on normalised pixels). ``model.blocks[0].conv`` must be a 1-input-channel Conv2d."""
    blocks = getattr(model, "blocks", None)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no .blocks: not a ChartCNN-like model")
    w = blocks[0].conv.weight.detach().float().cpu().numpy()
    if w.ndim != 4 or w.shape[1] != 1:
        raise ValueError(f"first conv weight has shape {w.shape}; expected (C, 1, kh, kw)")
    return w[:, 0]


def filter_mosaic(filters: np.ndarray, n_cols: int | None = None) -> tuple[np.ndarray, int, int]:
    """Tile (C, kh, kw) filters into one array with a 1-pixel NaN gutter between tiles.

    Returns (mosaic float64 (rows*(kh+1)-1, cols*(kw+1)-1), rows, cols); tile c sits at grid
    position (c // cols, c % cols); unused tiles are NaN (drawn blank).
    """
    f = np.asarray(filters, dtype=np.float64)
    if f.ndim != 3 or f.shape[0] == 0:
        raise ValueError(f"filters must be (C, kh, kw) with C >= 1; got {f.shape}")
    c, kh, kw = f.shape
    cols = n_cols or int(np.ceil(np.sqrt(c * kh / kw)))  # about square on screen
    cols = max(1, min(cols, c))
    rows = -(-c // cols)
    out = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for i in range(c):  # C tiles (64 for the baseline), not pixels
        r, q = divmod(i, cols)
        out[r * (kh + 1): r * (kh + 1) + kh, q * (kw + 1): q * (kw + 1) + kw] = f[i]
    return out, rows, cols
