"""Grad-CAM for the chart CNN (docs/method.md section 8), on plain framework hooks.

For one conv block with activation maps ``A`` of shape (N, K, h, w) and the scalar score ``y^c`` (the
pre-softmax logit of class c; for a one-output regression model, METHOD 3.6, the output ``o`` for
c = 1 "up", what raises the prediction, and ``-o`` for c = 0 "down", what lowers it)::

    alpha_k = (1 / hw) * sum_ij d y^c / d A^k_ij        (N, K)
    L^c     = ReLU(sum_k alpha_k A^k)                    (N, h, w)

``L^c`` is upsampled bilinearly to the image size (H, 3W) and divided by its per-image maximum (an
all-zero map stays zero), so every returned map lies in [0, 1]. ``A`` is the block's post-activation
output, taken before the max-pool (``pre_pool``, the default) or after it (``post_pool``).

Below the formula: pure selection/averaging helpers. The ``gradcam`` stage that writes the
Figure-12 panel and the average maps of one run is :mod:`pipeline.gradcam.stage`.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import LayerPoint
from pipeline.direction import predicted_up
from pipeline.errors import InputError

LAYER_POINTS: tuple[str, ...] = typing.get_args(LayerPoint)


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
