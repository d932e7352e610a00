"""Grad-CAM figures: the Figure-12 panel and the average-map grid. Functions return Figures.

Images are drawn in grey (0 black background, 255 white ink, as stored); heat maps with a fixed
[0, 1] colour scale (brighter = higher activation, METHOD 8), so columns are comparable. A
classifier's images are captioned with their P(up), a regression run's (METHOD 3.6) with their
prediction (:func:`score_text`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

HEAT_CMAP = "inferno"


ROW_INCHES = 0.95  # height of one image row


def _width(n_cols: int, h: int, w: int) -> float:
    """Figure width (inches) keeping each image at its own aspect ratio, plus the row-label margin."""
    return max(3.0, n_cols * ROW_INCHES * w / h + 0.8)


def score_name(regression: bool) -> str:
    """What a run's score is called in captions: "P(up)", or "prediction" for a regression run."""
    return "prediction" if regression else "P(up)"


def score_text(value: float, regression: bool = False, sep: str = "=") -> str:
    """Caption of one image's score: ``P(up)=0.613``, or ``prediction=+0.0123`` (a predicted
    return or vol-adjusted return: signed, four significant digits, as it may be small); ``sep``
    between name and value (e.g. a line break under a narrow image)."""
    value_text = f"{value:+.4g}" if regression else f"{value:.3f}"
    return f"{score_name(regression)}{sep}{value_text}"


def layer_labels(n_layers: int) -> list[str]:
    """Row labels of the heat-map rows: ``conv1`` .. ``conv{n}``."""
    return [f"conv{i + 1}" for i in range(n_layers)]


def _check(images: np.ndarray, maps: Sequence[np.ndarray], where: str) -> None:
    if images.ndim != 3:
        raise ValueError(f"{where}: images must be (N, H, W); got {images.shape}")
    for k, m in enumerate(maps):
        if m.shape != images.shape:
            raise ValueError(f"{where}: map of layer {k + 1} has shape {m.shape}, images {images.shape}")


def _grid(subfig, images: np.ndarray, maps: Sequence[np.ndarray], col_titles: Sequence[str],
          row_labels: Sequence[str], image_vmax: float) -> None:
    """Rows: original image, then one heat map per layer; one column per image."""
    n = images.shape[0]
    rows = 1 + len(maps)
    axes = subfig.subplots(rows, n, squeeze=False)
    heat = None
    for j in range(n):
        axes[0, j].imshow(images[j], cmap="gray", vmin=0, vmax=image_vmax, interpolation="nearest",
                          aspect="auto")
        axes[0, j].set_title(col_titles[j], fontsize=6)
        for k, m in enumerate(maps):
            heat = axes[k + 1, j].imshow(m[j], cmap=HEAT_CMAP, vmin=0.0, vmax=1.0,
                                         interpolation="nearest", aspect="auto")
    for r in range(rows):
        for j in range(n):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
    if heat is not None:  # one scale for every map: 0 = no weight, 1 = the image's maximum
        cb = subfig.colorbar(heat, ax=axes[1:, :].ravel().tolist(), shrink=0.9, pad=0.01)
        cb.set_label("Grad-CAM", fontsize=6)
        cb.ax.tick_params(labelsize=5)


def charts_with_maps(images: np.ndarray, maps: Sequence[np.ndarray], titles: Sequence[str],
                     title: str | None = None) -> Figure:
    """One column per chart (e.g. the tickers scored by ``make score``): the chart, then its
    Grad-CAM map per conv layer, with one colour bar.

    images: uint8 (N, H, 3W); maps: per layer (N, H, 3W) in [0, 1]; titles: (N,) column titles.
    """
    images = np.asarray(images)
    _check(images, maps, "charts_with_maps")
    if len(titles) != images.shape[0] or images.shape[0] == 0:
        raise ValueError("charts_with_maps: one title per image, at least one image")
    h, w = images.shape[1:]
    rows = 1 + len(maps)
    fig = Figure(figsize=(_width(images.shape[0], h, w) + 0.6, rows * ROW_INCHES + 0.8),
                 layout="constrained")
    _grid(fig, images, maps, titles, ["image", *layer_labels(len(maps))], 255)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def gradcam_panel(images: np.ndarray, maps: Sequence[np.ndarray], side: Sequence[str],
                  p_up: Sequence[float], title: str | None = None, regression: bool = False) -> Figure:
    """Figure-12-style panel: an "up" and a "down" panel, one column per image.

    Args:
        images: uint8 (N, H, 3W) original charts.
        maps: per conv layer (first layer first), float (N, H, 3W) in [0, 1].
        side: (N,) "up" or "down" for each image (which panel it goes to, in the given order).
        p_up: (N,) ensemble P(up), shown above each column; for a regression run (``regression``)
            the prediction, and the panels say "highest/lowest prediction" and which way the maps
            push it (up: what raises it, down: what lowers it).
        title: optional figure title.

    Returns:
        A Figure with 2 * (1 + n_layers) * n_per_side axes (every side must have the same count).
    """
    images = np.asarray(images)
    _check(images, maps, "gradcam_panel")
    side = np.asarray(side)
    p_up = np.asarray(p_up, dtype=np.float64)
    if side.shape != (images.shape[0],) or p_up.shape != (images.shape[0],):
        raise ValueError("gradcam_panel: side and p_up must have one entry per image")
    sides = ["up", "down"]
    counts = [int((side == s).sum()) for s in sides]
    if counts[0] != counts[1] or counts[0] == 0 or counts[0] + counts[1] != len(side):
        raise ValueError(f"gradcam_panel: need the same positive number of 'up' and 'down' images; "
                         f"got {dict(zip(sides, counts))} of {len(side)}")
    n = counts[0]
    rows = 1 + len(maps)
    h, w = images.shape[1:]
    fig = Figure(figsize=(_width(n, h, w), 2 * (rows * ROW_INCHES + 0.4) + 0.4), layout="constrained")
    subs = fig.subfigures(2, 1)
    labels = ["image", *layer_labels(len(maps))]
    for sub, s in zip(subs, sides):
        sel = np.flatnonzero(side == s)
        _grid(sub, images[sel], [m[sel] for m in maps], [score_text(p_up[i], regression) for i in sel],
              labels, 255)
        head = f'"{s}": {n} {"highest" if s == "up" else "lowest"}-{score_name(regression)} images'
        if regression:
            head += f' (maps: what {"raises" if s == "up" else "lowers"} the prediction)'
        sub.suptitle(head, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def average_maps_figure(panels: Sequence[tuple[str, np.ndarray, Sequence[np.ndarray], Sequence[str]]],
                        title: str | None = None) -> Figure:
    """Average images and maps per group, one panel per grouping.

    Args:
        panels: one entry per grouping (e.g. by predicted decile, by realised up/down) as
            ``(panel title, mean_images (G, H, W) float in [0, 255], mean_maps per layer (G, H, W)
            in [0, 1], column titles (G,))``; every panel must have the same number of layers.
        title: optional figure title.

    Returns:
        A Figure with sum over panels of (1 + n_layers) * G axes.
    """
    if not panels:
        raise ValueError("average_maps_figure needs at least one panel")
    n_layers = {len(p[2]) for p in panels}
    if len(n_layers) != 1:
        raise ValueError("average_maps_figure: panels differ in their number of layers")
    rows = 1 + n_layers.pop()
    widest = max(p[1].shape[0] for p in panels)
    h, w = panels[0][1].shape[1:]
    fig = Figure(figsize=(_width(widest, h, w), len(panels) * (rows * ROW_INCHES + 0.4) + 0.4),
                 layout="constrained")
    subs = np.atleast_1d(fig.subfigures(len(panels), 1))
    for sub, (ptitle, imgs, maps, cols) in zip(subs, panels):
        imgs = np.asarray(imgs)
        _check(imgs, maps, f"average_maps_figure panel {ptitle!r}")
        if len(cols) != imgs.shape[0]:
            raise ValueError(f"panel {ptitle!r}: {len(cols)} column titles for {imgs.shape[0]} groups")
        sub.suptitle(ptitle, fontsize=9)
        g = imgs.shape[0]
        if g < widest:  # keep the columns of narrower panels as wide as the widest panel's
            sub = sub.subfigures(1, 2, width_ratios=[g, widest - g])[0]
        _grid(sub, imgs, maps, cols, ["mean image", *layer_labels(len(maps))], 255)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
