"""Transfer: use a model trained in another experiment on this experiment's images (METHOD 6.1).

    transfer_run(cfg) -> run dir      what ``make train`` does when ``transfer.mode`` is not none

Two modes (``transfer.mode``):

* ``direct``: the source run's ensemble unchanged. Its members' weights are copied into this
  experiment's run folder (bytes identical, SHA-256 checked), with the source's model card (its
  normalisation and calibrations) plus a ``transfer`` provenance entry; no image is trained on.
  ``make predict`` / ``evaluate`` / ``report`` then run as for any run.
* ``head``: the frozen-convolution variant. Member i starts from source member i; every conv and
  batch-norm layer (weights and running statistics) is frozen, the final linear layer is
  re-initialised (``train.head_init``, seed ``train.seed + i``) and fitted alone on this experiment's
  in-sample images: member i's own 70/30 split, Adam with ``train.lr``, at most ``train.epochs``
  epochs with the usual early stopping on validation loss (``train.patience``), best epoch kept,
  then ``train.calibration`` fitted on the validation split. Pixels are normalised with the
  source's statistics, the scale the frozen convolutions were trained on.

The source run is ``<data_dir>/<source experiment>/runs/<run>`` (``transfer.source_config``, with
``transfer.source_run`` naming a run other than that config's own) or a run folder
(``transfer.source_run`` alone). A source whose model, chart window or chart elements differ from
this experiment's is refused when the config loads (:func:`pipeline.config.check_transfer_fits`)
and again when its model card is read, and so is one trained for another label (horizon, period or
record return, target) or, in direct mode, another ensemble size or calibration; each message names
both settings. The run folder's name ends in ``-direct_from_<source>`` / ``-head_from_<source>``
(pipeline.paths.run_name), so transferred runs never replace a trained one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import paths
from pipeline.config import (PROCESS_SETTINGS, Config, ConfigError, check_transfer_fits, derive,
                             hash_view, load_config, save_resolved, section_hash)
from pipeline.errors import InputError
from pipeline.images.store import ImageSet
from pipeline.io import (atomic_write_bytes, atomic_write_text, folder_lock, is_done, mark_done, marker_path,
                         read_json, remove_stale_temps, write_json)
from pipeline.models.cnn import ChartCNN, _xavier_init
from pipeline.runs import MODEL_CARD, load_ensemble, provenance, read_model_card, sha256_file, spec_from_card, \
    write_model_card
from pipeline.train import ddp
from pipeline.train.data import MemmapImages, insample_index, split_member
from pipeline.train.loop import (EarlyStopping, _csv_text, _loader, _save_torch, calibrate_member,
                                 check_images_current, check_model_fits, image_set_fingerprint,
                                 init_head_at_base_rate, resolve_runtime, run_epoch, set_threads)

log = logging.getLogger(__name__)

TRANSFER_FILE = "transfer.json"


# --------------------------------------------------------------------------------------------------
# The source run


def source_run_dir(cfg: Config) -> Path:
    """The source run's folder: ``<cfg.data_dir>/<source name>/runs/<run>`` or transfer.source_run."""
    x = cfg.transfer
    if x.source_config is None:
        return Path(str(x.source_run))
    src = derive(load_config(x.source_config), {"data_dir": cfg.data_dir})
    return src.experiment_dir / "runs" / (x.source_run or paths.run_name(src))


def read_source(cfg: Config) -> tuple[Path, dict]:
    """(source run folder, its model card), checked against this experiment (names both settings)."""
    x = cfg.transfer
    run = source_run_dir(cfg)
    where = (f"transfer.source_config {x.source_config}" if x.source_config is not None
             else f"transfer.source_run {x.source_run}")
    if not (run / MODEL_CARD).exists() or not marker_path(run, "_TRAIN_DONE").exists():
        how = f"`make train CONFIG={x.source_config}`" if x.source_config else "`make train` for it"
        raise InputError(f"{where}: {run} is not a finished training run (no {MODEL_CARD} or "
                         f"_TRAIN_DONE marker): run {how} first")
    card = read_model_card(run)
    chart = card.get("chart", {})
    check_transfer_fits({"model": card.get("model"), "window": chart.get("window"), "ma": chart.get("ma"),
                         "volume": chart.get("volume"), "image_set": card.get("image_set")},
                        cfg, f"{where} ({run})")
    t = cfg.train
    ours = {"horizon": t.horizon, "label_return": t.label_return, "target": getattr(t, "target", "class")}
    theirs = {"horizon": card.get("horizon"), "label_return": card.get("label_return"),
              "target": card.get("target", "class")}
    for key in ours:
        if ours[key] != theirs[key]:
            raise ConfigError(f"{where} ({run}) was trained for train.{key} {theirs[key]!r} but this "
                              f"experiment ({cfg.name}) has train.{key} {ours[key]!r}: its outputs "
                              "would not mean this experiment's label")
    return run, card


def _check_images(cfg: Config, card: dict) -> ImageSet:
    """This experiment's image set, finished and current, of the source model's input size."""
    image_set = ImageSet(paths.images_dir(cfg, cfg.train.image_set))
    check_images_current(cfg, image_set)
    check_model_fits(cfg.train.model, image_set)
    if tuple(image_set.shape) != tuple(card["image_hw"]):
        raise InputError(f"the source model reads {card['image_hw'][0]}x{card['image_hw'][1]} images "
                         f"but {image_set.directory} holds {image_set.shape[0]}x{image_set.shape[1]}")
    return image_set


def _provenance(cfg: Config, src: Path, card: dict) -> dict:
    x = cfg.transfer
    return {"mode": x.mode, "source_run": str(src.resolve()), "source_config": x.source_config,
            "source_card_sha256": sha256_file(src / MODEL_CARD),
            "source_image_set_fingerprint": card.get("image_set_fingerprint"),
            "source_train_hash": card.get("train_hash"), "source_provenance": card.get("provenance"),
            "note": ("the source's members unchanged (weights copied, normalisation and "
                     "calibrations kept)" if x.mode == "direct" else
                     "conv and batch-norm layers frozen at the source's weights; the final linear "
                     "layer re-initialised and fitted on this experiment's in-sample images")}


# --------------------------------------------------------------------------------------------------
# Both modes


def transfer_run(cfg: Config) -> Path:
    """Make ``paths.run_dir(cfg)`` a finished run from the source run (``transfer.mode`` direct or
    head); skipped when done with the same source and settings. Returns the run directory."""
    mode = cfg.transfer.mode
    if mode == "none":
        raise ConfigError("transfer_run needs transfer.mode direct or head (it is none)")
    src, card = read_source(cfg)
    image_set = _check_images(cfg, card)
    run = paths.run_dir(cfg)
    if mode == "direct":
        return _direct(cfg, run, src, card, image_set)
    return _head(cfg, run, src, card, image_set)


def _direct(cfg: Config, run: Path, src: Path, card: dict, image_set: ImageSet) -> Path:
    t = cfg.train
    where = f"the source run {src}"
    k = len(card["members"])
    if t.ensemble != k:
        raise ConfigError(f"{where} has {k} members but train.ensemble is {t.ensemble}: direct "
                          f"transfer uses the source ensemble unchanged (set train.ensemble: {k})")
    methods = sorted({m["calibration"]["method"] for m in card["members"]})
    if methods != [t.calibration]:
        raise ConfigError(f"{where} has calibration {'/'.join(methods)} but train.calibration is "
                          f"{t.calibration!r}: direct transfer keeps the source's calibrations "
                          f"(set train.calibration: {methods[0]})")
    fp = image_set_fingerprint(image_set)
    h = section_hash({"transfer": "direct", "source_card": sha256_file(src / MODEL_CARD),
                      "fingerprint": fp})
    if is_done(run, h, "_TRAIN_DONE") and (run / MODEL_CARD).exists():
        log.info("%s: already transferred from %s, skipping", run, src)
        return run
    with folder_lock(run, "train"):
        remove_stale_temps(run, recursive=False)
        marker_path(run, "_TRAIN_DONE").unlink(missing_ok=True)
        load_ensemble(src)  # every source weight file checked against its SHA-256 before copying
        members = []
        for i, m in enumerate(card["members"]):
            dest = run / f"member_{i}" / "best.pt"
            atomic_write_bytes(dest, (src / m["weights"]).read_bytes())
            members.append({**m, "weights": f"member_{i}/best.pt", "sha256": sha256_file(dest),
                            "trained": section_hash({"direct_from": m["trained"]})})
        note = _provenance(cfg, src, card)
        new = {**card, "members": members, "train_hash": h, "image_set_fingerprint": fp,
               "transfer": note, "provenance": provenance()}
        save_resolved(cfg, run)
        write_json(run / "norm.json", card["norm"])
        write_json(run / TRANSFER_FILE, note)
        write_json(run / MODEL_CARD, new)
        mark_done(run, h, "_TRAIN_DONE", transfer="direct", source=str(src.resolve()))
    log.info("%s: the %d members of %s transferred unchanged", run, k, src)
    return run


# --------------------------------------------------------------------------------------------------
# Head re-fit


class FrozenBody(nn.Module):
    """A ChartCNN whose conv blocks stay frozen and in eval mode (batch-norm running statistics
    untouched) whatever ``train()`` is called with; only ``model.head`` trains. The blocks run
    without autograd: no gradient is ever needed below the head."""

    def __init__(self, model: ChartCNN) -> None:
        super().__init__()
        self.model = model
        for p in model.blocks.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenBody":
        super().train(mode)
        self.model.blocks.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for b in self.model.blocks:
                x = b(x)
        return self.model.head(x)


def reset_head(model: ChartCNN, seed: int, head_init: str, labels: np.ndarray) -> None:
    """Re-initialise the final linear layer only: the model's own rule (Xavier weights, bias 0.01,
    or torch's default), or with ``head_init: base_rate`` weights 0 and the base rate's log-odds."""
    torch.manual_seed(seed)
    lin = model.head[-1]
    if model.spec.xavier:
        _xavier_init(lin)
    else:
        lin.reset_parameters()
    if head_init == "base_rate":
        init_head_at_base_rate(model, labels)


def _head(cfg: Config, run: Path, src: Path, card: dict, image_set: ImageSet) -> Path:
    t = cfg.train
    where = f"the source run {src}"
    k = len(card["members"])
    if t.ensemble > k:
        raise ConfigError(f"{where} has {k} members but train.ensemble is {t.ensemble}: head mode "
                          f"re-fits member i's head on source member i (set train.ensemble <= {k})")
    if getattr(t, "target", "class") != "class":
        raise ConfigError(f"transfer.mode head re-fits a classifier's head; train.target is "
                          f"{t.target!r}: use transfer.mode direct")
    rt = resolve_runtime(t, ddp.resolve_device(t.device))
    if rt.device.type == "cpu":
        set_threads(t)
    _, index = insample_index(cfg)
    fp = image_set_fingerprint(image_set)
    settings = {k_: v for k_, v in hash_view("train", t).items()
                if k_ not in PROCESS_SETTINGS + ("ensemble", "calibration", "run_tag", "device", "precision")}
    base = section_hash({"transfer": "head", "source_card": sha256_file(src / MODEL_CARD),
                         "train": settings, "fingerprint": fp, "precision": rt.precision})
    h = section_hash({"base": base, "ensemble": t.ensemble, "calibration": t.calibration})
    if is_done(run, h, "_TRAIN_DONE") and (run / MODEL_CARD).exists():
        log.info("%s: head already re-fitted from %s, skipping", run, src)
        return run
    norm = card["norm"]  # the scale the frozen convolutions were trained on
    with folder_lock(run, "train"):
        remove_stale_temps(run, recursive=False)
        marker_path(run, "_TRAIN_DONE").unlink(missing_ok=True)
        save_resolved(cfg, run)
        write_json(run / "norm.json", norm)
        summaries, calibrations, hashes = [], [], []
        for i in range(t.ensemble):
            m_hash = section_hash({"base": base, "i": i})
            s, cal = _fit_head_member(cfg, src, i, image_set, index, norm, run / f"member_{i}", rt, m_hash)
            summaries.append(s)
            calibrations.append(cal)
            hashes.append(m_hash)
        write_json(run / "summary.json", {
            "model": card["model"], "members": summaries, "transfer": "head",
            "val_loss_mean": float(np.mean([m["best_val_loss"] for m in summaries])),
            "val_acc_mean": float(np.mean([m["best_val_acc"] for m in summaries])),
            "n_train": summaries[0]["n_train"], "n_val": summaries[0]["n_val"],
            "precision": rt.precision, "device": str(rt.device), "world_size": 1, "processes": 1,
            "threads": torch.get_num_threads()})
        write_model_card(run, model=card["model"], spec=spec_from_card(card), image_set=t.image_set,
                         horizon=t.horizon, label_return=t.label_return, chart=card["chart"], norm=norm,
                         calibrations=calibrations, member_hashes=hashes, train_hash=h, fingerprint=fp,
                         precision=rt.precision)
        note = _provenance(cfg, src, card)
        new = {**read_json(run / MODEL_CARD), "transfer": note}
        write_json(run / TRANSFER_FILE, note)
        write_json(run / MODEL_CARD, new)
        mark_done(run, h, "_TRAIN_DONE", transfer="head", source=str(src.resolve()))
    return run


def _fit_head_member(cfg: Config, src: Path, i: int, image_set: ImageSet, index, norm: dict,
                     member_dir: Path, rt, m_hash: str) -> tuple[dict, dict]:
    """Member i: source member i's body frozen, its head re-initialised and fitted with early
    stopping; writes member_dir/{log.csv, best.pt, summary.json, calibration.json}. Returns
    (summary, calibration); a member finished with the same settings is reused."""
    t = cfg.train
    seed = t.seed + i
    if is_done(member_dir, m_hash):
        model = load_ensemble_member_dir(member_dir, src)
        cal = calibrate_member(t, model, image_set.directory, index, norm, i, member_dir, rt)
        return read_json(member_dir / "summary.json"), cal
    info = ddp.DistInfo(device=rt.device)
    train_pos, val_pos = split_member(len(index), t.val_fraction, seed)
    if len(train_pos) == 0 or len(val_pos) == 0:
        raise InputError(f"member {i}: pool of {len(index)} images is too small for a "
                         f"{1 - t.val_fraction:.0%}/{t.val_fraction:.0%} split")
    train_ds = MemmapImages(image_set.directory, index.subset(train_pos), norm)
    val_ds = MemmapImages(image_set.directory, index.subset(val_pos), norm)
    gen = torch.Generator().manual_seed(seed)
    train_loader = _loader(train_ds, torch.utils.data.RandomSampler(train_ds, generator=gen),
                           t.batch_size, t.num_workers, rt)
    val_loader = _loader(val_ds, list(range(len(val_ds))), max(t.batch_size, 512), t.num_workers, rt)
    model = load_ensemble(src, [i]).members[0]
    reset_head(model, seed, t.head_init, train_ds.index.labels)
    model = model.to(rt.device)
    net = FrozenBody(model)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    stopper = EarlyStopping(t.patience)
    best_head = {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()}
    rows: list[dict] = []
    epoch = 0
    while epoch < t.epochs and not stopper.should_stop(epoch - 1):
        torch.manual_seed(seed * 100_003 + epoch * 101)  # dropout of this (member, epoch)
        tr = run_epoch(net, train_loader, rt, info, optimizer, desc=f"head m{i} e{epoch} train")
        va = run_epoch(net, val_loader, rt, info, desc=f"head m{i} e{epoch} val")
        rows.append({"epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"],
                     "val_loss": va["loss"], "val_acc": va["acc"], "val_mcc": va["mcc"],
                     "seconds": tr["seconds"] + va["seconds"],
                     "images_per_s": tr["n"] / tr["seconds"] if tr["seconds"] > 0 else float("nan"),
                     "val_diff": va["diff"]})
        if stopper.update(epoch, va["loss"]):
            best_head = {k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()}
        log.info("head member %d epoch %d: train loss %.4f | val loss %.4f acc %.4f", i, epoch,
                 tr["loss"], va["loss"], va["acc"])
        atomic_write_text(member_dir / "log.csv", _csv_text(rows))
        epoch += 1
    model.head.load_state_dict(best_head)
    model = model.cpu().eval()
    _save_torch(member_dir / "best.pt", {k: v.detach().clone() for k, v in model.state_dict().items()})
    best = next(r for r in rows if r["epoch"] == stopper.best_epoch)
    summary = {"member": i, "seed": seed, "model": cfg.train.model,
               "best_epoch": stopper.best_epoch, "best_val_loss": stopper.best_loss,
               "best_val_acc": best["val_acc"], "best_val_mcc": best["val_mcc"], "epochs_run": len(rows),
               "stopped_early": stopper.should_stop(epoch - 1), "n_train": len(train_ds),
               "n_val": len(val_ds), "transfer": "head", "source_member": i}
    write_json(member_dir / "summary.json", summary)
    mark_done(member_dir, m_hash)
    cal = calibrate_member(t, model.to(rt.device), image_set.directory, index, norm, i, member_dir, rt)
    return {**summary, "calibration": cal}, cal


def load_ensemble_member_dir(member_dir: Path, src: Path) -> ChartCNN:
    """A finished re-fitted member (before this run's model card exists): the source's
    architecture with the member's own best weights (weights_only)."""
    model = ChartCNN(spec_from_card(read_model_card(src)))
    model.load_state_dict(torch.load(member_dir / "best.pt", map_location="cpu", weights_only=True))
    return model.eval()
