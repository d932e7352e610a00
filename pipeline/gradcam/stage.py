"""The ``gradcam`` stage (``python -m pipeline.gradcam``): the Figure-12 panel, the per-image maps
and the average maps of one trained run, from the Grad-CAM library in :mod:`pipeline.gradcam.core`.

Reads ``runs/<run>/`` (members, predictions) and the run's image set; writes ``gradcam/<run>/``
(docs/interfaces.md). One writer per folder; a finished folder is skipped while its settings and
its predictions' stamp are unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.errors import InputError
from pipeline.evaluate.portfolios import pooled_deciles
from pipeline.gradcam.core import ensemble_grad_cam, group_means, locate_rows, select_extremes
from pipeline.progress import progress

log = logging.getLogger(__name__)



def _test_years(cfg) -> tuple[int, int]:
    from pipeline.config import split_years

    return split_years(cfg.train)[1]


def choose_year(cfg, pred_years: Sequence[int], image_years: Sequence[int]) -> int:
    """cfg.gradcam.year, or the last test year present in both the predictions and the image set."""
    first, last = _test_years(cfg)
    have = sorted(set(int(y) for y in pred_years) & set(int(y) for y in image_years))
    if cfg.gradcam.year is not None:
        if cfg.gradcam.year not in have:
            raise InputError(f"gradcam.year {cfg.gradcam.year} has no predictions with images; "
                             f"years available: {have}")
        if not first <= cfg.gradcam.year <= last:
            log.warning("gradcam.year %d lies outside the test years %d-%d (in-sample images)",
                        cfg.gradcam.year, first, last)
        return int(cfg.gradcam.year)
    oos = [y for y in have if first <= y <= last]
    if not oos:
        raise InputError(f"no test year ({first}-{last}) has both predictions and images "
                         f"(predictions: {sorted(set(pred_years))}, images: {list(image_years)})")
    return oos[-1]


class _MapBatcher:
    """Grad-CAM over uint8 images in batches: normalise, run the members, return maps per layer."""

    def __init__(self, models: list[nn.Module], mean: float, std: float, layer_point: str,
                 device: torch.device, batch_size: int) -> None:
        from pipeline.train.data import normalise

        self.normalise = normalise
        self.models = [m.to(device).eval() for m in models]
        self.mean, self.std = mean, std
        self.layer_point = layer_point
        self.device = device
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray, target: np.ndarray | None = None) -> list[np.ndarray]:
        """Maps per layer of uint8 ``images`` (N, H, 3W); ``target`` (N,) classes or None (the
        ensemble's predicted class), as :func:`ensemble_grad_cam`."""
        x = self.normalise(np.asarray(images), self.mean, self.std).to(self.device)
        return ensemble_grad_cam(self.models, x, self.layer_point, target)

    def batches(self, images: np.ndarray):
        """Yield (start, maps per layer) for consecutive batches of ``images`` (N, H, 3W)."""
        for s in range(0, len(images), self.batch_size):
            yield s, self(images[s:s + self.batch_size])


def _run_gradcam(cfg) -> Path:
    """Write the Grad-CAM artifacts of the run ``paths.run_dir(cfg)`` to ``paths.gradcam_dir(cfg)``.

    A regression run (METHOD 3.6; ``p_up`` then holds the predicted target) is selected on its
    prediction the same way; its "up" maps explain the output (what raises the prediction) and its
    "down" maps minus the output (what lowers it), whatever the prediction's sign, and the
    averages explain each image's predicted side (the sign of the prediction).

    Artifacts: panel.png (Figure 12), maps.npz (images uint8 (2n, H, 3W), layer_<k> float32
    (2n, H, 3W) for k = 1..L, stock_id, date (datetime64[ns]), p_up, side), selection.parquet
    (stock_id, date, p_up, side), averages.png + averages.npz (mean images and maps by predicted
    decile 1..10 and by realised up/down over up to cfg.gradcam.average_samples images of the
    year), config.yaml and a completion marker. Skips the work when nothing changed.

    Returns the output directory.
    """
    from pipeline import paths
    from pipeline.config import is_regression, save_resolved, section_hash
    from pipeline.gradcam.figures import average_maps_figure, gradcam_panel, score_name
    from pipeline.images.store import ImageSet
    from pipeline.io import (atomic_path, input_stamp, is_done, mark_done, read_json, write_figure,
                             write_parquet)
    from pipeline.train.data import norm_for_year
    from pipeline.train.ddp import resolve_device
    from pipeline.runs import load_ensemble, member_indices, read_predictions, require_current_predictions
    from pipeline.train.loop import set_threads

    run = paths.run_dir(cfg)
    out = paths.gradcam_dir(cfg)
    pred_path, train_marker = require_current_predictions(run)
    # The trained run's own settings hash (model, data, seeds) + the predictions' stamp (their
    # content): a re-predicted run redoes the maps, threads or device changes alone do not.
    stamp = input_stamp(pred_path)
    settings = section_hash(cfg.gradcam, {"train": read_json(train_marker).get("hash"),
                                          "image_set": cfg.train.image_set, "predictions": stamp})
    if is_done(out, settings):
        log.info("gradcam: %s is up to date", out)
        return out

    gc = cfg.gradcam
    imgset = ImageSet(paths.images_dir(cfg, cfg.train.image_set))
    pred = read_predictions(pred_path, ["stock_id", "date", "p_up", "label"])
    pred["date"] = pd.to_datetime(pred["date"])
    year = choose_year(cfg, pred["date"].dt.year.unique(), imgset.years)
    pred = pred[pred["date"].dt.year == year].dropna(subset=["p_up"]).reset_index(drop=True)
    labels = imgset.labels(year, columns=["stock_id", "date"])
    images = imgset.images(year)

    members = member_indices(run)
    if gc.members == "first":
        members = members[:1]
    ens = load_ensemble(run, members)
    models = ens.members
    regression = is_regression(ens.target)
    what = score_name(regression)
    mean, std = norm_for_year(ens.norm, year)  # per-year statistics when the run used them
    device = resolve_device(cfg.train.device)
    if device.type == "cpu":
        set_threads(cfg.train)
    batcher = _MapBatcher(models, float(mean), float(std), gc.layer_point, device,
                          batch_size=min(256, cfg.evaluate.predict_batch_size))
    log.info("gradcam: run %s, year %d, members %s, layer point %s", run.name, year, members,
             gc.layer_point)

    # Figure 12: extremes of P(up) (of the prediction for a regression run, whose "down" side is
    # explained as such even where every prediction of the year is above 0).
    sel = select_extremes(pred, gc.n_per_side)
    rows = locate_rows(labels, sel, where=str(imgset.directory / f"labels_{year}.parquet"))
    sel_images = np.stack([images[r] for r in rows])
    maps = batcher(sel_images, (sel["side"].to_numpy() == "up").astype(np.int64) if regression else None)
    n_layers = len(maps)
    title = (f"{run.name} Grad-CAM ({gc.layer_point}, member{'s' if len(members) > 1 else ''} "
             f"{','.join(map(str, members))}) for {len(sel)} images from {year}")
    write_figure(out / "panel.png", gradcam_panel(sel_images, maps, sel["side"], sel["p_up"], title,
                                                  regression=regression))
    with atomic_path(out / "maps.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, images=sel_images, stock_id=sel["stock_id"].to_numpy(np.int32),
                date=sel["date"].to_numpy("datetime64[ns]"), p_up=sel["p_up"].to_numpy(np.float64),
                side=sel["side"].to_numpy().astype("U4"),
                **{f"layer_{k + 1}": m for k, m in enumerate(maps)})
    write_parquet(out / "selection.parquet", sel)

    # Beyond the paper: average maps by predicted decile (pooled within the year) and realised sign.
    decile = pooled_deciles(pred["p_up"].to_numpy())
    rng = np.random.default_rng(cfg.train.seed)
    take = np.sort(rng.choice(len(pred), size=min(gc.average_samples, len(pred)), replace=False))
    sub = pred.iloc[take].reset_index(drop=True)
    sub_rows = locate_rows(labels, sub, where=str(imgset.directory / f"labels_{year}.parquet"))
    order = np.argsort(sub_rows, kind="stable")  # read the memmap in file order
    sub, sub_rows, sub_dec = sub.iloc[order].reset_index(drop=True), sub_rows[order], decile[take][order]
    realised = np.where(sub["label"].to_numpy() == 1, 0, np.where(sub["label"].to_numpy() == 0, 1, -1))
    h, w = imgset.shape
    dec_sums = [np.zeros((10, h, w)) for _ in range(n_layers + 1)]
    rea_sums = [np.zeros((2, h, w)) for _ in range(n_layers + 1)]
    dec_n = np.zeros(10, np.int64)
    rea_n = np.zeros(2, np.int64)
    
    sub_images = np.asarray(images[sub_rows])  # at most average_samples images in memory
    for s, bmaps in progress(batcher.batches(sub_images), total=-(-len(sub_rows) // batcher.batch_size),
                         desc="gradcam averages", disable=None):
        e = s + bmaps[0].shape[0]
        arrays = [sub_images[s:e], *bmaps]
        for k, a in enumerate(arrays):
            ds, dn = group_means(a, sub_dec[s:e] - 1, 10)
            rs, rn = group_means(a, realised[s:e], 2)
            dec_sums[k] += ds
            rea_sums[k] += rs
        dec_n += dn
        rea_n += rn

    def mean(sums: list[np.ndarray], n: np.ndarray) -> list[np.ndarray]:
        d = np.maximum(n, 1)[:, None, None]  # empty groups stay 0 (their count says so)
        return [(s_ / d).astype(np.float32) for s_ in sums]

    dec_mean, rea_mean = mean(dec_sums, dec_n), mean(rea_sums, rea_n)
    with atomic_path(out / "averages.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, year=np.int64(year), decile=np.arange(1, 11), decile_count=dec_n,
                decile_images=dec_mean[0], realised=np.array(["up", "down"]), realised_count=rea_n,
                realised_images=rea_mean[0],
                **{f"decile_layer_{k}": dec_mean[k] for k in range(1, n_layers + 1)},
                **{f"realised_layer_{k}": rea_mean[k] for k in range(1, n_layers + 1)})
    fig = average_maps_figure([
        (f"by predicted decile of {'the ' if regression else ''}{what} within {year} (D1 lowest)",
         dec_mean[0], dec_mean[1:],
         [f"D{d + 1} (n={dec_n[d]})" for d in range(10)]),
        ("by realised outcome", rea_mean[0], rea_mean[1:],
         [f"{lab} (n={rea_n[j]})" for j, lab in enumerate(["up", "down"])]),
    ], title=f"{run.name}: mean image and mean Grad-CAM map over {len(sub)} images from {year}")
    write_figure(out / "averages.png", fig)
    save_resolved(cfg, out)
    mark_done(out, settings, year=year, members=members, n_average=int(len(sub)), predictions=stamp)
    return out


def run_gradcam(cfg) -> Path:  # noqa: ANN001
    """The Grad-CAM stage (see :func:`_run_gradcam`): one writer per output folder, temporaries of
    a killed run removed, predictions older than the trained run refused."""
    from pipeline import paths
    from pipeline.io import folder_lock, remove_stale_temps

    out = paths.gradcam_dir(cfg)
    with folder_lock(out, "gradcam"):
        if n := remove_stale_temps(out):
            log.info("removed %d temporary file(s) left in %s by an interrupted run", n, out)
        return _run_gradcam(cfg)
