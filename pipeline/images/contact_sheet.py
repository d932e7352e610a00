"""A contact sheet: a PNG grid of sample images of one set, each captioned "stock_id date"."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.config import section_hash
from pipeline.images.store import ImageSet
from pipeline.io import is_done, mark_done, marker_path, read_json, write_figure


def sample_images(image_set: ImageSet, n: int, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``n`` images drawn without replacement across all years, in (year, row) order.

    Returns (images uint8 (k, H, 3W), stock_id int (k,), date datetime64 (k,)); deterministic
    for a given set and seed.
    """
    years = image_set.years
    counts = np.array([image_set.count(y) for y in years], dtype=np.int64)
    total = int(counts.sum())
    k = min(int(n), total)
    if k <= 0:
        h_w = image_set.shape if years else (0, 0)
        return (np.zeros((0, *h_w), np.uint8), np.zeros(0, np.int32),
                np.zeros(0, "datetime64[ns]"))
    flat = np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    bounds = np.r_[0, np.cumsum(counts)]
    year_of = np.searchsorted(bounds, flat, side="right") - 1
    imgs, sids, dates = [], [], []
    for yi in np.unique(year_of):  # a loop over years, not images
        rows = flat[year_of == yi] - bounds[yi]
        y = years[yi]
        imgs.append(np.asarray(image_set.images(y)[rows]))
        lab = image_set.labels(y, columns=["stock_id", "date"])
        sids.append(lab["stock_id"].to_numpy()[rows])
        dates.append(lab["date"].to_numpy()[rows])
    return np.concatenate(imgs), np.concatenate(sids), np.concatenate(dates)


def contact_sheet(directory: str | Path, n: int = 24, path: str | Path | None = None,
                  seed: int = 0, title: str | None = None) -> Path:
    """Write ``contact_sheet.png`` (or ``path``) for the image set in ``directory``."""
    from matplotlib.figure import Figure

    directory = Path(directory)
    out = Path(path) if path is not None else directory / "contact_sheet.png"
    s = ImageSet(directory)
    imgs, sids, dates = sample_images(s, n, seed)
    k = max(len(imgs), 1)
    cols = min(6, k)
    rows = math.ceil(k / cols)
    h, w = imgs.shape[1:] if len(imgs) else (64, 60)
    cell_w = 1.6 * max(1.0, w / 60)
    fig = Figure(figsize=(cols * cell_w, rows * cell_w * h / w + rows * 0.35))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(imgs):
            # Images are 0 background / 255 ink; nearest interpolation keeps single pixels.
            ax.imshow(imgs[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            day = np.datetime_as_string(np.datetime64(dates[i], "D"))
            ax.set_xlabel(f"{int(sids[i])}  {day}", fontsize=7)
        else:
            ax.axis("off")
    if not len(imgs):
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
    fig.suptitle(title or directory.name, fontsize=9)
    fig.tight_layout()
    write_figure(out, fig)
    return out


def update_contact_sheet(directory: str | Path, n: int = 24, seed: int = 0,
                         title: str | None = None) -> Path:
    """``contact_sheet.png`` of a built set, drawn again only when the set or the sheet's settings
    changed: ``_SHEET_DONE.json`` holds a hash of the set's completion marker and of (n, seed,
    title), the project's one change-detection rule (hashes, not file times)."""
    directory = Path(directory)
    out = directory / "contact_sheet.png"
    key = section_hash({"set": read_json(marker_path(directory)).get("hash"), "n": int(n),
                        "seed": int(seed), "title": title})
    if out.exists() and is_done(directory, key, "_SHEET_DONE"):
        return out
    contact_sheet(directory, n, seed=seed, title=title)
    mark_done(directory, key, "_SHEET_DONE")
    return out
