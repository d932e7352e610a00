"""Figures of the interpretation toolkit. Plot functions take ``ax=None`` (a new Figure with one
axes, :func:`pipeline.evaluate.plots.axes_or_new`) and return the axes; :func:`grid` lays several
out (:func:`pipeline.evaluate.plots.figure_grid`). The project's palette and style are used
(pipeline.evaluate.plots), heat maps the Grad-CAM colour map for non-negative maps and a diverging
map (blue = lowers P(up), red = raises it) for signed ones. Every function draws inside the project's
style (pipeline.evaluate.plots.style, applied per call, never globally). Save with
:func:`pipeline.io.write_figure` (atomic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipeline.evaluate.plots import PALETTE, axes_or_new, figure_grid, line_chart, styled
from pipeline.gradcam.figures import HEAT_CMAP
from pipeline.interpret.filters import filter_mosaic

SIGNED_CMAP = "RdBu_r"


def grid(n_rows: int, n_cols: int, cell: tuple[float, float] = (1.3, 1.3), title: str | None = None
         ) -> tuple[Figure, np.ndarray]:
    """(Figure, axes (n_rows, n_cols)) in the project style; ``cell`` is one axes' (width, height)
    in inches (the Figure is at least 3 x 2 inches, plus 0.4 in of height for the title)."""
    fig, axes = figure_grid(n_rows, n_cols,
                            (max(3.0, n_cols * cell[0]), max(2.0, n_rows * cell[1] + 0.4)))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig, axes


def _picture_frame(ax: Axes, title: str, fontsize: float = 6) -> Axes:
    """Frame an axes that shows a picture (chart, map, kernel mosaic): no ticks, no grid over the
    pixels, a small title."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_title(title, fontsize=fontsize)
    return ax


@styled
def filters_ax(filters: np.ndarray, ax: Axes | None = None, title: str = "first-layer filters"
               ) -> Axes:
    """The (C, kh, kw) first-layer kernels as one mosaic, one diverging colour scale (0 = white)."""
    ax = axes_or_new(ax, (5.0, 4.0))
    mosaic, rows, cols = filter_mosaic(filters)
    vmax = float(np.nanmax(np.abs(mosaic))) or 1.0
    im = ax.imshow(np.ma.masked_invalid(mosaic), cmap=SIGNED_CMAP, vmin=-vmax, vmax=vmax,
                   interpolation="nearest")
    _picture_frame(ax, f"{title} ({len(filters)} kernels {filters.shape[1]}x{filters.shape[2]})",
                   fontsize=8)
    ax.figure.colorbar(im, ax=ax, shrink=0.7).ax.tick_params(labelsize=6)
    return ax


@styled
def image_ax(image: np.ndarray, ax: Axes | None = None, title: str = "", vmax: float = 255.0
             ) -> Axes:
    """A chart (or class-model image) in grey, 0 black background, ``vmax`` white."""
    ax = axes_or_new(ax, (2.0, 2.0))
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest", aspect="auto")
    return _picture_frame(ax, title)


@styled
def map_ax(values: np.ndarray, ax: Axes | None = None, title: str = "", signed: bool = True,
           image: np.ndarray | None = None) -> Axes:
    """One map (H, W): signed on a symmetric diverging scale, else on [0, max] in the heat colour
    map; ``image`` (uint8) outlines the chart's ink faintly on top, so the map can be placed."""
    ax = axes_or_new(ax, (2.0, 2.0))
    v = np.asarray(values, dtype=np.float64)
    peak = float(np.nanmax(np.abs(v))) if v.size else 0.0
    peak = peak or 1.0
    if signed:
        ax.imshow(v, cmap=SIGNED_CMAP, vmin=-peak, vmax=peak, interpolation="nearest", aspect="auto")
    else:
        ax.imshow(v, cmap=HEAT_CMAP, vmin=0, vmax=peak, interpolation="nearest", aspect="auto")
    if image is not None:
        ink = np.ma.masked_where(np.asarray(image) == 0, np.ones(np.shape(image)))
        ax.imshow(ink, cmap="Greys", vmin=0, vmax=1.5, alpha=0.25, interpolation="nearest",
                  aspect="auto")
    return _picture_frame(ax, title)


@styled
def day_effect_ax(effects: np.ndarray, ax: Axes | None = None, label: str = "",
                  color: str | None = None, title: str = "occlusion effect by day") -> Axes:
    """Mean (+-2 standard errors) over images of the P(up) change from occluding each day, days
    1..W left to right (W = the image date). ``effects``: (N, W)."""
    ax = axes_or_new(ax, (5.0, 3.0))
    e = np.asarray(effects, dtype=np.float64)
    d = np.arange(1, e.shape[1] + 1)
    m = e.mean(axis=0)
    se = e.std(axis=0, ddof=1) / np.sqrt(len(e)) if len(e) > 1 else np.zeros_like(m)
    c = color or PALETTE[0]
    ax.plot(d, m, marker="o", ms=3, color=c, label=label or None)
    ax.fill_between(d, m - 2 * se, m + 2 * se, color=c, alpha=0.2, lw=0)
    ax.axhline(0, color="#7f7f7f", lw=0.8)
    ax.set_xlabel("day in the chart (last = image date)")
    ax.set_ylabel("mean change in P(up)")
    ax.set_title(title)
    if label:
        ax.legend(fontsize=7)
    return ax


@styled
def embedding_ax(xy: np.ndarray, colour: np.ndarray, ax: Axes | None = None, title: str = "",
                 colour_label: str = "", centre: float | None = None) -> Axes:
    """Scatter of a 2-D embedding (N, 2) coloured by ``colour`` (N,) (diverging around ``centre``
    when given, e.g. 0.5 for P(up) or 0 for a return)."""
    ax = axes_or_new(ax, (4.0, 3.5))
    c = np.asarray(colour, dtype=np.float64)
    kw = {}
    if centre is not None and np.isfinite(c).any():
        half = float(np.nanmax(np.abs(c - centre))) or 1.0
        kw = {"cmap": SIGNED_CMAP, "vmin": centre - half, "vmax": centre + half}
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=c, s=9, lw=0, **kw)
    ax.figure.colorbar(sc, ax=ax, shrink=0.8, label=colour_label)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


@styled
def explained_variance_ax(ratio: np.ndarray, ax: Axes | None = None) -> Axes:
    """Bars of the explained-variance share per principal component."""
    ax = axes_or_new(ax, (4.0, 3.0))
    k = np.arange(1, len(ratio) + 1)
    ax.bar(k, ratio, color=PALETTE[0])
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance")
    ax.set_title("PCA of the penultimate features")
    return ax


@styled
def flip_curve_ax(curves: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Share of predictions flipped against the L-infinity budget eps (log axis), one line per
    attack in order of appearance. ``curves``: columns attack, eps (of 255), share_flipped
    (robustness.flip_curve)."""
    ax = line_chart({name: g.set_index("eps")["share_flipped"]
                     for name, g in curves.groupby("attack", sort=False)}, ax,
                    xlabel="eps: largest change per pixel (of 255)",
                    ylabel="share of predictions flipped", title="adversarial robustness",
                    legend_fontsize=7, figsize=(4.5, 3.0), marker="o", ms=3)
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    return ax


@styled
def concentration_ax(table: pd.DataFrame, subset: str, ax: Axes | None = None) -> Axes:
    """Mean concentration ratio per region (groups) and method (bars) for one subset of images;
    the dashed line at 1 is an evenly spread map. ``table``: regions.planted_signal_table output."""
    ax = axes_or_new(ax, (6.0, 3.0))
    t = table[table["subset"] == subset]
    regions = list(dict.fromkeys(t["region"]))
    methods = list(dict.fromkeys(t["method"]))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(regions))
    for i, m in enumerate(methods):
        vals = [t[(t["region"] == r) & (t["method"] == m)]["mean"].astype(float).mean() for r in regions]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=m, color=PALETTE[i % len(PALETTE)])
    ax.axhline(1.0, color="#7f7f7f", lw=0.8, ls="--")
    ax.set_xticks(x, regions, rotation=20, fontsize=7)
    ax.set_ylabel("share of map / share of area")
    ax.set_title(f"where the maps concentrate ({subset})")
    ax.legend(fontsize=7)
    return ax


@styled
def maps_figure(images: np.ndarray, maps: Sequence[tuple[str, np.ndarray, bool]],
                col_titles: Sequence[str], title: str | None = None) -> Figure:
    """One column per image: the chart, then one row per (name, maps (N, H, W), signed)."""
    n = len(images)
    fig, axes = grid(1 + len(maps), n, cell=(1.2, 1.3), title=title)
    for j in range(n):
        image_ax(images[j], axes[0, j], col_titles[j])
        for r, (name, m, signed) in enumerate(maps, start=1):
            map_ax(m[j], axes[r, j], signed=signed, image=images[j])
    for r, name in enumerate(["chart", *[m[0] for m in maps]]):
        axes[r, 0].set_ylabel(name, fontsize=7)
    return fig
