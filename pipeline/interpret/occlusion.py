"""Occlusion sensitivity: how P(up) moves when part of the chart is blanked.

Occluding = setting pixels to the background value 0 (removing ink; a background pixel stays as
it is, so occluding a region without ink changes nothing). The effect of an occlusion on image i
is ``P(up | occluded) - P(up | original)`` (the calibrated ensemble P(up), a probability change).
Three families: a grid of ``patch`` rectangles (a map), each day's price glyph and each day's
volume bar (the "which bars and days" tables), and any named set of masks (e.g. the whole volume
area, the MA line, the last k days).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.interpret.scoring import EnsembleScore, predict_p_up, to_pixels


def occlusion_effects(score: EnsembleScore, images: np.ndarray, masks: np.ndarray,
                      batch_size: int = 256) -> np.ndarray:
    """Effect of each mask on each image, float64 (N, K).

    images: uint8 (N, H, 3W); masks: bool (K, H, 3W) shared by all images, or (N, K, H, 3W) one
    set per image. Each (image, mask) pair is one forward pass, run in batches of ``batch_size``.
    """
    images = np.asarray(images)
    masks = np.asarray(masks, dtype=bool)
    n, k = images.shape[0], masks.shape[-3]
    per_image = masks.ndim == 4
    base = predict_p_up(score, images, batch_size)
    out = np.empty((n, k), dtype=np.float64)
    pairs = np.arange(n * k)
    dev = score.scale.device
    with torch.no_grad():
        for s in range(0, n * k, batch_size):
            p = pairs[s:s + batch_size]
            i, j = p // k, p % k
            m = masks[i, j] if per_image else masks[j]
            occluded = np.where(m, 0, images[i]).astype(np.uint8)
            out[i, j] = score.p_up(to_pixels(occluded, dev)).double().cpu().numpy()
    return out - base[:, None]


def patch_masks(shape: tuple[int, int], patch: tuple[int, int]) -> np.ndarray:
    """bool (K, H, W): a grid of non-overlapping patch (rows, cols) rectangles covering the image
    (the last row/column of patches is cut at the border)."""
    h, w = shape
    ph, pw = patch
    tops, lefts = np.arange(0, h, ph), np.arange(0, w, pw)
    r, c = np.arange(h), np.arange(w)
    rm = (r[None, :] >= tops[:, None]) & (r[None, :] < tops[:, None] + ph)  # (nt, H)
    cm = (c[None, :] >= lefts[:, None]) & (c[None, :] < lefts[:, None] + pw)  # (nl, W)
    return (rm[:, None, :, None] & cm[None, :, None, :]).reshape(-1, h, w)


def occlusion_map(score: EnsembleScore, images: np.ndarray, patch: tuple[int, int],
                  batch_size: int = 256) -> np.ndarray:
    """Patch-occlusion map, float64 (N, H, 3W): each pixel carries the effect of blanking the
    patch that contains it (the patches tile the image, so every pixel is in exactly one)."""
    images = np.asarray(images)
    masks = patch_masks(images.shape[1:], patch)
    eff = occlusion_effects(score, images, masks, batch_size)  # (N, K)
    return np.einsum("nk,khw->nhw", eff, masks.astype(np.float64))


def day_masks(window: int, height: int, price_rows: int, part: str) -> np.ndarray:
    """bool (W, H, 3W): per day d, its price glyph (``part="price"``: rows 0..P-1 of columns
    3d..3d+2, which also blanks the MA pixels there) or its volume bar (``part="volume"``: rows
    P+1..H-1 of column 3d+1)."""
    m = np.zeros((window, height, 3 * window), dtype=bool)
    d = np.arange(window)
    if part == "price":
        for k in range(3):
            m[d, :price_rows, 3 * d + k] = True
    elif part == "volume":
        if price_rows + 1 < height:
            m[d, price_rows + 1:, 3 * d + 1] = True
    else:
        raise ValueError(f"part is {part!r}; choose 'price' or 'volume'")
    return m
