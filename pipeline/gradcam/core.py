"""Grad-CAM for the chart CNN (docs/method.md section 8), on plain framework hooks.

For one conv block with activation maps ``A`` of shape (N, K, h, w) and the scalar score ``y^c`` (the
pre-softmax logit of class c; for a one-output regression model, METHOD 3.6, the output ``o`` for
c = 1 "up", what raises the prediction, and ``-o`` for c = 0 "down", what lowers it)::

    alpha_k = (1 / hw) * sum_ij d y^c / d A^k_ij        (N, K)
    L^c     = ReLU(sum_k alpha_k A^k)                    (N, h, w)

``L^c`` is upsampled bilinearly to the image size (H, 3W) and divided by its per-image maximum (an
all-zero map stays zero), so every returned map lies in [0, 1]. ``A`` is the block's post-activation
output, taken before the max-pool (``pre_pool``, the default) or after it (``post_pool``).

Below the formula: pure selection/averaging helpers, and :func:`run_gradcam`, the ``gradcam`` stage
(``python -m pipeline.gradcam``) that writes the Figure-12 panel and the average maps of one run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import InputError
from pipeline.evaluate.regression import predicted_up
from pipeline.progress import progress

log = logging.getLogger(__name__)

LAYER_POINTS = ("pre_pool", "post_pool")


def _hook_modules(model: nn.Module, layer_point: str) -> list[nn.Module]:
    """The module of each block whose output is ``A``: ``block.act`` (pre_pool) or ``block.pool``."""
    if layer_point not in LAYER_POINTS:
        raise ValueError(f"layer_point is {layer_point!r}; choose one of {list(LAYER_POINTS)}")
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError(f"{type(model).__name__} has no non-empty .blocks: not a ChartCNN-like model")
    attr = "act" if layer_point == "pre_pool" else "pool"
    out = []
    for i, b in enumerate(blocks):
        m = getattr(b, attr, None)
        if m is None:
            raise ValueError(f"block {i} of {type(model).__name__} has no .{attr}")
        out.append(m)
    return out


def _targets(logits: torch.Tensor, target: int | Sequence[int] | np.ndarray | torch.Tensor | None
             ) -> torch.Tensor:
    """Class index per image (N,) int64: the predicted class (the argmax of the logits; for a
    one-output model 1 = "up" where the output is predicted up, METHOD 3.6), or the given
    class(es). A one-output model has the two classes 0 ("down") and 1 ("up") too."""
    n, n_cls = logits.shape
    if target is None:
        return predicted_up(logits[:, 0]).long() if n_cls == 1 else logits.argmax(dim=1)
    n_cls = max(n_cls, 2)
    t = torch.as_tensor(np.asarray(target), dtype=torch.long, device=logits.device)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"target has shape {tuple(t.shape)}; expected a class index or ({n},)")
    if bool(((t < 0) | (t >= n_cls)).any()):
        raise ValueError(f"target classes must lie in [0, {n_cls - 1}]")
    return t


def class_scores(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """The scalar y^c Grad-CAM explains, (N,): the logit of class ``cls`` (N,) of each image; for a
    one-output (regression) model the output where cls is 1 ("up": what raises the prediction) and
    minus the output where cls is 0 ("down": what lowers it)."""
    if logits.shape[1] == 1:
        return torch.where(cls == 1, logits[:, 0], -logits[:, 0])
    return logits.gather(1, cls[:, None])[:, 0]


def normalise_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map (N, H, W) by its own maximum; a map whose maximum is 0 stays all zero."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)),
                       torch.zeros_like(maps))


def grad_cam(model: nn.Module, x: torch.Tensor, layer_point: str = "pre_pool",
             target: int | Sequence[int] | np.ndarray | torch.Tensor | None = None
             ) -> list[np.ndarray]:
    """Grad-CAM maps of every conv block for a batch of images.

    Args:
        model: a ChartCNN-like module with ``.blocks`` (each with ``.act`` and ``.pool``) returning
            logits (N, 2) with no softmax, or (N, 1) for a regression run (the predicted target).
            It is run in eval mode (BatchNorm running statistics, no dropout); its previous
            train/eval mode is restored afterwards.
        x: float tensor (N, 1, H, 3W), already normalised, on the model's device.
        layer_point: ``pre_pool`` (output of ``block.act``) or ``post_pool`` (of ``block.pool``).
        target: None (each image's predicted class = argmax of the logits; for a one-output model
            1 where the output is above 0, else 0), one class index for all images, or a (N,)
            sequence of class indices. For a one-output model class 1 explains the output and
            class 0 its negative (:func:`class_scores`).

    Returns:
        One float32 array per block (index 0 = first conv layer), each (N, H, 3W) with values in
        [0, 1]: the ReLU of the alpha-weighted sum of activation maps, bilinearly upsampled
        (align_corners=False) to the input size and divided by its per-image maximum.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N, 1, H, W); got shape {tuple(x.shape)}")
    modules = _hook_modules(model, layer_point)
    acts: list[torch.Tensor | None] = [None] * len(modules)

    def make_hook(i: int):
        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            acts[i] = out
        return hook

    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # The input requires grad so the activations are in the graph even if the weights are
            # frozen (requires_grad False); only gradients w.r.t. the activations are taken.
            xin = x.detach().clone().requires_grad_(True)
            logits = model(xin)
            if logits.ndim != 2:
                raise ValueError(f"model returned shape {tuple(logits.shape)}; expected (N, C) logits")
            cls = _targets(logits, target)
            # Images are independent in eval mode, so d(sum_n y_n^c)/dA_n = d y_n^c / dA_n.
            score = class_scores(logits, cls).sum()
            if any(a is None for a in acts):
                raise ValueError("a block's hooked module was not called in the forward pass")
            grads = torch.autograd.grad(score, acts)  # type: ignore[arg-type]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    size = tuple(x.shape[-2:])
    out = []
    for a, g in zip(acts, grads):
        a = a.detach().float()
        g = g.detach().float()
        alpha = g.mean(dim=(2, 3))                                    # (N, K)
        cam = F.relu((alpha[:, :, None, None] * a).sum(dim=1))         # (N, h, w)
        up = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        out.append(normalise_max(up).cpu().numpy().astype(np.float32))
    return out


def ensemble_grad_cam(models: Sequence[nn.Module], x: torch.Tensor, layer_point: str = "pre_pool",
                      target: int | Sequence[int] | np.ndarray | torch.Tensor | None = None
                      ) -> list[np.ndarray]:
    """Grad-CAM averaged over ensemble members (METHOD 8, ``cam_members: all``).

    The target class is shared by all members: the ensemble's predicted class (mean softmax P(up)
    > 0.5 -> class 1; for regression members their mean output above 0) unless ``target`` is
    given, so every member explains the same decision. Each
    member's normalised maps are averaged and the mean is divided again by its per-image maximum,
    so the result follows the single-model convention (per-image max 1, zero stays zero). With one
    model this equals :func:`grad_cam`.

    Returns one float32 (N, H, 3W) array per block, as :func:`grad_cam`.
    """
    if len(models) == 0:
        raise ValueError("ensemble_grad_cam needs at least one model")
    if len(models) == 1:
        return grad_cam(models[0], x, layer_point, target)
    if target is None:
        target = ensemble_predicted_class(models, x)
    acc: list[np.ndarray] | None = None
    for m in models:
        maps = grad_cam(m, x, layer_point, target)
        acc = maps if acc is None else [s + v for s, v in zip(acc, maps)]
    assert acc is not None
    return [normalise_max(torch.from_numpy(s / len(models))).numpy() for s in acc]


def ensemble_predicted_class(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """(N,) int64 argmax of the members' mean softmax, each member run in eval mode (mode restored);
    for one-output (regression) members 1 where their mean output, the ensemble's prediction, is
    predicted up (METHOD 3.6), else 0."""
    outs = []
    with torch.no_grad():
        for m in models:
            was = m.training
            m.eval()
            try:
                z = m(x).float()
                outs.append(z if z.shape[1] == 1 else torch.softmax(z, dim=1))
            finally:
                m.train(was)
    mean = torch.stack(outs).mean(0)
    return predicted_up(mean[:, 0]).long() if mean.shape[1] == 1 else mean.argmax(dim=1)


# --------------------------------------------------------------------------------------------------
# Selection and averaging (pure functions of tables / arrays)


def select_extremes(pred: pd.DataFrame, n_per_side: int) -> pd.DataFrame:
    """The ``n_per_side`` highest-P(up) ("up") and lowest-P(up) ("down") rows of one year.

    Args:
        pred: rows with columns stock_id, date, p_up (one year's out-of-sample predictions).
        n_per_side: images per side; fewer rows than 2*n_per_side is an error (the two sides must
            not share images).

    Returns:
        DataFrame stock_id, ticker (when ``pred`` has one), date, p_up, side ("up" rows first, by
        descending p_up; then "down" by ascending p_up). Ties are broken by (stock_id, date) so the
        selection is deterministic.
    """
    missing = {"stock_id", "date", "p_up"} - set(pred.columns)
    if missing:
        raise InputError(f"predictions lack columns {sorted(missing)}")
    p = pred[["stock_id", *(["ticker"] if "ticker" in pred.columns else []), "date", "p_up"]]
    p = p.dropna(subset=["p_up"])
    if len(p) < 2 * n_per_side:
        raise InputError(f"only {len(p)} predictions with a P(up); need {2 * n_per_side} "
                         f"({n_per_side} per side)")
    up = p.sort_values(["p_up", "stock_id", "date"], ascending=[False, True, True]).head(n_per_side)
    down = p.sort_values(["p_up", "stock_id", "date"], ascending=[True, True, True]).head(n_per_side)
    out = pd.concat([up.assign(side="up"), down.assign(side="down")], ignore_index=True)
    out["stock_id"] = out["stock_id"].astype(np.int32)
    return out


def locate_rows(labels: pd.DataFrame, keys: pd.DataFrame, where: str = "labels") -> np.ndarray:
    """Row positions in ``labels`` (an image set's label table) of each (stock_id, date) in ``keys``.

    Returns an int64 (len(keys),) array; a key absent from ``labels`` is an error naming it.
    """
    idx = pd.MultiIndex.from_arrays([labels["stock_id"].astype(np.int64).to_numpy(),
                                     pd.to_datetime(labels["date"]).to_numpy("datetime64[ns]")])
    if not idx.is_unique:
        raise InputError(f"{where}: duplicate (stock_id, date) rows")
    q = pd.MultiIndex.from_arrays([keys["stock_id"].astype(np.int64).to_numpy(),
                                   pd.to_datetime(keys["date"]).to_numpy("datetime64[ns]")])
    pos = idx.get_indexer(q)
    if (pos < 0).any():
        k = keys.iloc[int(np.flatnonzero(pos < 0)[0])]
        raise InputError(f"{where}: no image for stock_id {k['stock_id']} on {k['date']}")
    return pos.astype(np.int64)


def pooled_deciles(p: np.ndarray) -> np.ndarray:
    """Decile 1..10 of each value in ``p`` (N,) by pooled breakpoints (METHOD 7 convention).

    Breakpoints are the 10th..90th percentiles (linear interpolation); D1 = [p0, p10],
    Dk = (p_{10(k-1)}, p_{10k}]. Returns int64 (N,).
    """
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0 or np.isnan(p).any():
        raise ValueError("pooled_deciles needs a non-empty array without NaN")
    bp = np.quantile(p, np.arange(1, 10) / 10.0)
    return (np.searchsorted(bp, p, side="left") + 1).astype(np.int64)


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of ``values`` (N, ...) per group id 0..n_groups-1 (``groups`` (N,) int).

    Returns (sums (n_groups, ...) float64, counts (n_groups,) int64); ids outside the range are
    ignored (e.g. -1 = no group). Vectorised with ``np.add.at``.
    """
    groups = np.asarray(groups, dtype=np.int64)
    keep = (groups >= 0) & (groups < n_groups)
    sums = np.zeros((n_groups, *values.shape[1:]), dtype=np.float64)
    np.add.at(sums, groups[keep], values[keep].astype(np.float64))
    counts = np.bincount(groups[keep], minlength=n_groups).astype(np.int64)
    return sums, counts


# --------------------------------------------------------------------------------------------------
# The stage: python -m pipeline.gradcam


def member_indices(run_dir: Path) -> list[int]:
    """Indices i of the run's finished members (``member_<i>/best.pt`` present), ascending."""
    idx = sorted(int(p.parent.name.split("_", 1)[1]) for p in Path(run_dir).glob("member_*/best.pt"))
    if not idx:
        raise FileNotFoundError(f"no trained member (member_<i>/best.pt) in {run_dir}: run `make train`")
    return idx


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
    from pipeline.runs import load_ensemble, read_predictions, require_current_predictions
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
