"""Training an ensemble of chart CNNs (docs/method.md section 6).

    train_run(cfg) -> run dir       every member, resumable, skipped when done;
                                                writes the run's model card (pipeline.runs), from
                                                which pipeline.runs.load_ensemble loads it

Per member i (seed = cfg.train.seed + i): its own random 70/30 split of the in-sample pool and its
own initialisation; cross-entropy (a regression target, ``train.target``: one output and the mean
squared error, METHOD 3.6), Adam (lr 1e-5, no weight decay), batch 128 shuffled, at most
``epochs`` epochs; after each epoch the validation loss (eval mode) feeds :class:`EarlyStopping`
(stop when epoch - best_epoch >= patience) and the best weights are restored at the end.
Every epoch is checkpointed (model, optimizer, early-stopping state, best weights, log), and each
epoch's randomness (shuffle, dropout) is seeded from (member seed, epoch), so an interrupted run
resumes where it stopped and ends with the same weights as an uninterrupted one.

Run-dir layout: see docs/interfaces.md ("Run"). Epochs are numbered from 0.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.direction import confusion_counts, confusion_metrics, predicted_up
from pipeline.errors import InputError
from pipeline.progress import progress
from pipeline import paths
from pipeline.config import (PROCESS_SETTINGS, Config, TrainConfig, hash_view, is_regression, model_outputs,
                             parse_image_set, save_resolved, section_hash)
from pipeline.images.store import ImageSet
from pipeline.io import (StaleInputError, atomic_write_bytes, atomic_write_text, folder_lock, is_done,
                         mark_done, marker_path, read_json, remove_stale_temps, require_done, write_json)
from pipeline.models.cnn import ChartCNN
from pipeline.models.registry import create_model, model_spec
from pipeline.procs import plan_workers, run_jobs, threads_per_worker, usable_cores
from pipeline.runs import MODEL_CARD, write_model_card
from pipeline.train import ddp
from pipeline.train.log import LOG_COLUMNS
from pipeline.train.calibration import base_rate_logit, fit_calibration, validation_logits
from pipeline.train.data import (MemmapImages, SampleIndex, collate_batch, compute_norm, insample_index,
                                 split_member)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Early stopping


@dataclass
class EarlyStopping:
    """Track the best validation loss; ``should_stop`` when epoch - best_epoch >= patience.

    A loss counts as better only if strictly lower (ties keep the earlier epoch). NaN never improves.
    """

    patience: int
    best_loss: float = math.inf
    best_epoch: int = -1

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record epoch ``epoch``'s validation loss; True if it is the new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch = float(val_loss), int(epoch)
            return True
        return False

    def should_stop(self, epoch: int) -> bool:
        return self.best_epoch >= 0 and epoch - self.best_epoch >= self.patience

    def state(self) -> dict:
        return {"patience": self.patience, "best_loss": self.best_loss, "best_epoch": self.best_epoch}


# --------------------------------------------------------------------------------------------------
# Device and precision


@dataclass(frozen=True)
class Runtime:
    """Resolved device and precision. precision: "bf16" | "fp16" (CUDA only) | "fp32"."""

    device: torch.device
    precision: str
    channels_last: bool

    def autocast(self):  # noqa: ANN201
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without the probes
        return False


def resolve_runtime(t: TrainConfig, device: torch.device) -> Runtime:
    """Precision "auto": bf16 autocast on CPUs with native bf16 and on bf16-capable GPUs, fp16
    (with gradient scaling) on older GPUs, else fp32. channels_last on CPU (oneDNN's fast layout)."""
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        prec = {"fp32": "fp32", "bf16": "bf16"}.get(t.precision, "bf16" if bf16_ok else "fp16")
        return Runtime(device, prec, channels_last=False)
    if t.precision == "bf16" and not cpu_has_fast_bf16():
        log.warning("train.precision bf16 requested but this CPU has no native bf16: it will be slow")
    prec = "bf16" if t.precision == "bf16" or (t.precision == "auto" and cpu_has_fast_bf16()) else "fp32"
    return Runtime(device, prec, channels_last=True)


def set_threads(t: TrainConfig) -> int:
    """torch intra-op threads: cfg.train.threads, else the cores available to this process shared
    among the processes torchrun started on this machine (LOCAL_WORLD_SIZE)."""
    if t.threads:
        n = t.threads
    else:
        n = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(int(n))
    return int(n)


# --------------------------------------------------------------------------------------------------
# One epoch


def binary_metrics(tp: float, tn: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Accuracy, Matthews correlation and diff = share predicted up minus share predicted down,
    from confusion counts (positive = up; ``pipeline.direction.confusion_metrics``)."""
    m = confusion_metrics(tp, tn, fp, fn)
    return m["accuracy"], m["mcc"], 2.0 * m["share_up_pred"] - 1.0


def run_epoch(model: nn.Module, loader: torch.utils.data.DataLoader, rt: Runtime, info: ddp.DistInfo,
              optimizer: torch.optim.Optimizer | None = None, scaler: torch.amp.GradScaler | None = None,
              desc: str = "", regression: bool = False) -> dict:
    """One pass over ``loader``; trains when ``optimizer`` is given (train mode), else evaluates
    (eval mode, no grad). Returns {"loss", "acc", "mcc", "diff", "n", "seconds"} pooled over ranks
    (loss = mean per-image cross-entropy). ``regression``: the model has one output and the
    labels are float targets; loss = mean squared error, and acc/mcc/diff judge the signs
    (predicted up = output > 0, up = target > 0)."""
    training = optimizer is not None
    model.train(training)
    sums = np.zeros(6)  # loss_sum, n, tp, tn, fp, fn
    t0 = time.perf_counter()
    bar = progress(loader, desc=desc, leave=False, disable=not info.is_main, mininterval=2.0)
    with torch.set_grad_enabled(training):
        for x, y in bar:
            if not regression and y.numel() and (int(y.max()) > 1 or int(y.min()) < 0):
                # Label 2 (missing) must have been dropped by the index (METHOD 3.2).
                raise ValueError(f"label outside {{0, 1}} reached the loss: {sorted(set(y.tolist()))}")
            x = x.to(rt.device, non_blocking=True)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(rt.device, non_blocking=True)
            with rt.autocast():
                logits = model(x)
            if regression:
                loss = F.mse_loss(logits.float()[:, 0], y.float())
            else:
                loss = F.cross_entropy(logits.float(), y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                if regression:
                    called, up = predicted_up(logits[:, 0]), y > 0  # up: METHOD 3.2
                else:
                    called, up = logits.argmax(1) == 1, y == 1
                tp, tn, fp, fn = confusion_counts(called, up)
            sums += (loss.item() * len(y), len(y), tp, tn, fp, fn)
    seconds = time.perf_counter() - t0
    sums = ddp.all_reduce_sum(sums, info)
    acc, mcc, diff = binary_metrics(*sums[2:])
    # Plain Python numbers: they go into checkpoints loaded with weights_only=True.
    return {"loss": float(sums[0] / max(sums[1], 1)), "acc": float(acc), "mcc": float(mcc),
            "diff": float(diff), "n": int(sums[1]), "seconds": float(seconds)}


# --------------------------------------------------------------------------------------------------
# One member


def init_head_at_base_rate(model: ChartCNN, labels: np.ndarray) -> None:
    """Output layer: weights 0, biases (0, log-odds of the share of up labels), so the first
    forward pass predicts the base rate for every image (initial loss = the label entropy)."""
    lin = model.head[-1]
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([0.0, base_rate_logit(labels)], dtype=lin.bias.dtype))


def target_scale(targets: np.ndarray) -> float:
    """The in-sample pool's root-mean-square regression target (float; 1.0 for an all-zero pool).

    A regression run learns target / target_scale (saved in norm.json and the model card; the
    finished member's output layer is multiplied by it, :func:`fold_target_scale`, so best.pt
    predicts the target itself). The output is thus O(1) while training whatever the target's
    units: a raw monthly return is a few hundredths, and the learning rates and head of the
    classifier's recipes, tuned for O(1) logits, would otherwise move the prediction by far more
    than the target's size in one step. The logged MSE is in units of the pool's mean squared
    target: 1.0 = predicting zero.
    """
    rms = float(np.sqrt(np.mean(np.square(np.asarray(targets, dtype=np.float64))))) if len(targets) else 0.0
    return rms if rms > 0 else 1.0


def fold_target_scale(model: ChartCNN, scale: float) -> None:
    """Multiply the output layer's weights and bias by ``scale``: a model trained on target / scale
    then outputs the target in its own units (the same predictions, exactly rescaled)."""
    lin = model.head[-1]
    with torch.no_grad():
        lin.weight.mul_(scale)
        lin.bias.mul_(scale)


def init_head_at_mean(model: ChartCNN, targets: np.ndarray) -> None:
    """The regression counterpart of :func:`init_head_at_base_rate`: output weights 0 and bias the
    mean training target, so the first forward pass predicts that mean (initial loss = the
    targets' variance)."""
    lin = model.head[-1]
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(float(np.mean(targets)) if len(targets) else 0.0)


def _loader(ds: MemmapImages, sampler, batch: int, workers: int, rt: Runtime) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate_batch,
                                       num_workers=workers, pin_memory=rt.device.type == "cuda",
                                       persistent_workers=False)


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in LOG_COLUMNS})
    return buf.getvalue()


def _save_torch(path: Path, obj: dict) -> None:
    """torch.save atomically, byte-identical for identical content: saved to memory, the archive's
    internal folder is always "archive" (saved to a file it is the file's name, here a random
    temporary one), so equal weights give equal files and equal SHA-256 in the model card."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in ddp.unwrap(model).state_dict().items()}


def train_member(t: TrainConfig, model_name: str, image_dir: Path, index: SampleIndex, norm: dict,
                 member: int, member_dir: Path, rt: Runtime, info: ddp.DistInfo | None = None,
                 settings_hash: str = "", on_epoch_end: Callable[[int, dict], None] | None = None
                 ) -> tuple[ChartCNN, dict]:
    """Train (or resume, or load when finished) ensemble member ``member``.

    t: training settings (seed, epochs, patience, lr, batch_size, val_fraction, num_workers).
    index: the in-sample pool; this member splits it 70/30 with seed t.seed + member.
    Writes member_dir/{log.csv, checkpoint.pt, best.pt, summary.json} (rank 0 only).
    ``on_epoch_end(epoch, row)`` runs after each epoch's checkpoint (used by tests to interrupt).
    Returns the model (best weights, eval mode, on rt.device) and the member summary dict.
    """
    info = info or ddp.DistInfo(device=rt.device)
    seed = t.seed + member
    regression = is_regression(t.target)
    done_hash = settings_hash or "nohash"
    if is_done(member_dir, done_hash):
        model = load_member_dir(member_dir, model_name, model_outputs(t.target)).to(rt.device)
        return model, read_json(member_dir / "summary.json")

    train_pos, val_pos = split_member(len(index), t.val_fraction, seed)
    if len(train_pos) == 0 or len(val_pos) == 0:
        raise InputError(f"member {member}: pool of {len(index)} images is too small for a "
                         f"{1 - t.val_fraction:.0%}/{t.val_fraction:.0%} split")
    train_ds = MemmapImages(image_dir, index.subset(train_pos), norm)
    val_ds = MemmapImages(image_dir, index.subset(val_pos), norm)
    # The global batch is the paper's 128 however many processes share it.
    per_rank_batch = max(1, t.batch_size // info.world_size)
    sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                                  shuffle=True, seed=seed, drop_last=False)
    val_sampler = list(range(info.rank, len(val_ds), info.world_size))
    train_loader = _loader(train_ds, sampler, per_rank_batch, t.num_workers, rt)
    val_loader = _loader(val_ds, val_sampler, max(per_rank_batch, 512), t.num_workers, rt)

    torch.manual_seed(seed)  # the member's initialisation
    # The classifier's call is unchanged (tests hook create_model(name)).
    model = create_model(model_name, n_outputs=1) if regression else create_model(model_name)
    if t.head_init == "base_rate":
        if regression:
            init_head_at_mean(model, train_ds.index.labels / norm.get("target_scale", 1.0))
        else:
            init_head_at_base_rate(model, train_ds.index.labels)
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
        # The stem's (C_out, 1, kh, kw) weight is used as a matrix: keep it (and its gradient,
        # which DDP buckets expect in the parameter's layout) contiguous.
        stem = model.blocks[0].conv.weight
        stem.data = torch.empty(stem.shape, dtype=stem.dtype, device=stem.device).copy_(stem.data)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if rt.precision == "fp16" else None
    stopper = EarlyStopping(t.patience)
    rows: list[dict] = []
    best_state = _cpu_state(model)
    start = 0
    ckpt_path = member_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck.get("hash") == done_hash:
            was = ck.get("threads")
            if was is not None and was != torch.get_num_threads() and info.is_main:
                log.warning("member %d: resuming on %d thread(s) a run trained so far on %d: CPU "
                            "kernels may sum in another order, so the weights will match neither an "
                            "uninterrupted %d-thread nor %d-thread run exactly (set train.threads=%d "
                            "to resume exactly)", member, torch.get_num_threads(), was, was,
                            torch.get_num_threads(), was)
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            stopper = EarlyStopping(**ck["stopper"])
            best_state, rows, start = ck["best_state"], ck["log"], int(ck["epoch"]) + 1
            if info.is_main:
                log.info("member %d: resuming after epoch %d", member, start - 1)
        elif info.is_main:
            log.info("member %d: checkpoint from other settings, starting over", member)
    net = ddp.wrap_model(model, info)

    stopped_early = bool(rows) and stopper.should_stop(start - 1)
    epoch = start
    while epoch < t.epochs and not stopped_early:
        sampler.set_epoch(epoch)
        # Dropout randomness per (member, epoch, rank): a resumed epoch replays exactly.
        torch.manual_seed(seed * 100_003 + epoch * 101 + info.rank)
        tr = run_epoch(net, train_loader, rt, info, optimizer, scaler, desc=f"m{member} e{epoch} train",
                       regression=regression)
        ddp.sync_buffers(net, info)
        va = run_epoch(net, val_loader, rt, info, desc=f"m{member} e{epoch} val", regression=regression)
        row = {"epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"], "val_loss": va["loss"],
               "val_acc": va["acc"], "val_mcc": va["mcc"], "seconds": tr["seconds"] + va["seconds"],
               "images_per_s": tr["n"] / tr["seconds"] if tr["seconds"] > 0 else float("nan"),
               "val_diff": va["diff"]}
        rows.append(row)
        if stopper.update(epoch, va["loss"]):
            best_state = _cpu_state(model)
        stopped_early = stopper.should_stop(epoch)
        if info.is_main:
            log.info("member %d epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f mcc %.4f | "
                     "%.0f img/s", member, epoch, tr["loss"], tr["acc"], va["loss"], va["acc"],
                     va["mcc"], row["images_per_s"])
            _save_torch(ckpt_path, {"model": _cpu_state(model), "optimizer": optimizer.state_dict(),
                                    "epoch": epoch, "stopper": stopper.state(), "best_state": best_state,
                                    "log": rows, "hash": done_hash,
                                    "threads": torch.get_num_threads()})
            atomic_write_text(member_dir / "log.csv", _csv_text(rows))
        ddp.barrier(info)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        epoch += 1

    ddp.check_replicas(net, info)
    model.load_state_dict(best_state)
    model.eval()
    if regression:  # best.pt then predicts the target in its own units, for every consumer
        fold_target_scale(model, norm.get("target_scale", 1.0))
        best_state = _cpu_state(model)
    best = next(r for r in rows if r["epoch"] == stopper.best_epoch)
    summary = {"member": member, "seed": seed, "model": model_name, "best_epoch": stopper.best_epoch,
               "best_val_loss": stopper.best_loss, "best_val_acc": best["val_acc"],
               "best_val_mcc": best["val_mcc"], "epochs_run": len(rows), "stopped_early": stopped_early,
               "n_train": len(train_ds), "n_val": len(val_ds)}
    if info.is_main:
        _save_torch(member_dir / "best.pt", best_state)
        write_json(member_dir / "summary.json", summary)
        mark_done(member_dir, done_hash)
    ddp.barrier(info)
    return model, summary


# --------------------------------------------------------------------------------------------------
# Calibration


CALIBRATION_FILE = "calibration.json"


def calibrate_member(t: TrainConfig, model: ChartCNN, image_dir: Path, index: SampleIndex, norm: dict,
                     member: int, member_dir: Path, rt: Runtime) -> dict:
    """Fit ``t.calibration`` on member ``member``'s validation split (the same 70/30 split as its
    training) and write member_dir/calibration.json; reuse the file when it holds the same method
    for the same trained weights. Returns the calibration dict; method "none" (the paper) is the
    identity and costs no pass over the validation images."""
    if t.calibration == "none":
        return {"method": "none", "scale": 1.0, "shift": 0.0}
    path = member_dir / CALIBRATION_FILE
    trained = read_json(marker_path(member_dir)).get("hash")
    if path.exists():
        old = read_json(path)
        if old.get("method") == t.calibration and old.get("trained") == trained:
            return old
    _, val_pos = split_member(len(index), t.val_fraction, t.seed + member)
    val_ds = MemmapImages(image_dir, index.subset(val_pos), norm)
    loader = _loader(val_ds, list(range(len(val_ds))), max(t.batch_size, 512), 0, rt)
    d, y = validation_logits(model, loader, rt)
    cal = {**fit_calibration(d, y, t.calibration), "trained": trained,
           "fitted_on": f"member {member}'s validation split ({len(y)} in-sample images)"}
    write_json(path, cal)
    log.info("member %d: %s calibration (scale %.3f, shift %.3f): validation loss %.4f -> %.4f",
             member, t.calibration, cal["scale"], cal["shift"], cal["loss_before"], cal["loss_after"])
    return cal


# --------------------------------------------------------------------------------------------------
# A whole run


# Settings that do not change a member's weights: calibration is fitted after training.
_NOT_NUMERIC = PROCESS_SETTINGS + ("device", "precision", "calibration", "run_tag")


def image_set_fingerprint(image_set: ImageSet) -> dict:
    """What identifies the image set's content: its completion-marker hash and per-year counts."""
    m = marker_path(image_set.directory)
    return {"marker": read_json(m).get("hash") if m.exists() else None,
            "counts": {str(y): image_set.count(y) for y in image_set.years}}


def member_hash(t: TrainConfig, rt: Runtime, fingerprint: dict) -> str:
    """Settings that determine a member's weights (not the ensemble size, threads or workers)."""
    d = {k: v for k, v in hash_view("train", t).items() if k not in _NOT_NUMERIC + ("ensemble",)}
    return section_hash(d, {"precision": rt.precision, "device": rt.device.type}, fingerprint)


def write_card(rc: Config, run: Path, rt: Runtime, fingerprint: dict, run_hash: str) -> Path:
    """run/model.json (pipeline.runs) from the finished members' files."""
    t = rc.train
    calibrations = []
    for i in range(t.ensemble):
        p = run / f"member_{i}" / CALIBRATION_FILE
        calibrations.append(read_json(p) if p.exists() and t.calibration != "none"
                            else {"method": "none", "scale": 1.0, "shift": 0.0})
    return write_model_card(
        run, model=t.model, spec=model_spec(t.model, n_outputs=model_outputs(t.target)),
        image_set=t.image_set, horizon=t.horizon, label_return=t.label_return, target=t.target, norm=read_json(run / "norm.json"), calibrations=calibrations,
        chart={"window": parse_image_set(t.image_set)[0], "ma": rc.images.ma, "volume": rc.images.volume},
        member_hashes=[read_json(marker_path(run / f"member_{i}"))["hash"] for i in range(t.ensemble)],
        train_hash=run_hash, fingerprint=fingerprint, precision=rt.precision)


def check_images_current(cfg: Config, image_set: ImageSet) -> None:
    """StaleInputError when the image set is unfinished, or was built by the image stage from the
    experiment's panel under other settings than cfg's (or before the panel was rebuilt), or was
    imported from the authors' files and those files changed since. A set written otherwise (by a
    notebook) is checked for completion only."""
    from pipeline.images.authors import check_authors_current
    from pipeline.images.build import image_set_hash

    d = image_set.directory
    marker = marker_path(d)
    if not marker.exists():
        raise StaleInputError(f"the image set in {d} is unfinished (no completion marker): run "
                              "`make images` first")
    built_from = read_json(marker).get("built_from")
    if built_from == "panel":
        require_done(d, image_set_hash(cfg, cfg.train.image_set, paths.panel_dir(cfg)),
                     "the image set", "images")
    elif built_from == "authors":
        check_authors_current(d)


def check_model_fits(model_name: str, image_set: ImageSet) -> None:
    """ValueError when the model's input size differs from the image set's (H, 3W)."""
    hw = model_spec(model_name).image_hw
    if tuple(image_set.shape) != tuple(hw):
        raise InputError(f"model {model_name} expects {hw[0]}x{hw[1]} images but "
                         f"{image_set.directory} holds {image_set.shape[0]}x{image_set.shape[1]}")


def _train_and_calibrate(t: TrainConfig, image_dir: Path, index: SampleIndex, norm: dict, i: int,
                         run: Path, rt: Runtime, info: ddp.DistInfo, m_hash: str,
                         on_epoch_end: Callable[[int, int, dict], None] | None = None,
                         on_member_end: Callable[[int, ChartCNN], None] | None = None) -> dict:
    """Member ``i`` of a run: train (or resume, or load), then calibrate; its summary dict."""
    hook = (lambda e, r: on_epoch_end(i, e, r)) if on_epoch_end else None
    net, s = train_member(t, t.model, image_dir, index, norm, i, run / f"member_{i}", rt, info,
                          settings_hash=section_hash({"member_hash": m_hash, "i": i}), on_epoch_end=hook)
    if info.is_main:
        s = {**s, "calibration": calibrate_member(t, net, image_dir, index, norm, i, run / f"member_{i}", rt)}
    if on_member_end is not None:
        on_member_end(i, net)
    return s


def _member_job(t: TrainConfig, image_dir: Path, index: SampleIndex, norm: dict, i: int, run: Path,
                m_hash: str) -> dict:
    """One member in a worker process (pipeline.procs; threads already set by the worker). On
    CUDA, member i runs on GPU i modulo the GPUs visible."""
    rt = resolve_runtime(t, ddp.resolve_device(t.device, local_rank=i))
    return _train_and_calibrate(t, image_dir, index, norm, i, run, rt, ddp.DistInfo(device=rt.device), m_hash)


def train_run(cfg: Config,
              on_epoch_end: Callable[[int, int, dict], None] | None = None,
              on_member_end: Callable[[int, ChartCNN], None] | None = None) -> Path:
    """Train the ensemble of ``train.model`` into paths.run_dir(cfg) (an ablation variant is a
    config with another ``train.model``).

    Resumable: finished members are skipped, an interrupted member resumes from its checkpoint;
    the whole run is skipped when done with the same settings. Members run in
    ``train.parallel_members`` processes (pipeline.procs; the same seeds and splits as one after
    another); under torchrun, one after another, each data-parallel over the ranks. A member whose
    process fails is named in the error; the members that finished stay finished. One process at a
    time may train a run folder (FolderBusyError otherwise).
    on_epoch_end(member, epoch, row) / on_member_end(member, model with best weights): hooks (tests,
    notebooks); they run in this process, so members then run one after another.
    Returns the run directory.
    """
    t = cfg.train
    run = paths.run_dir(cfg)
    model_spec(t.model)  # an unknown name fails before any data is read
    info = ddp.init_distributed(t.device)
    rt = resolve_runtime(t, info.device)
    image_set, index = insample_index(cfg)
    check_images_current(cfg, image_set)
    check_model_fits(t.model, image_set)
    fp = image_set_fingerprint(image_set)
    m_hash = member_hash(t, rt, fp)
    run_hash = section_hash({"member": m_hash, "ensemble": t.ensemble, "calibration": t.calibration})
    if is_done(run, run_hash, "_TRAIN_DONE"):
        if not (run / MODEL_CARD).exists():  # a run trained before model cards existed
            write_card(cfg, run, rt, fp, run_hash)
        log.info("%s: already trained with these settings, skipping", run)
        return run
    with folder_lock(run, "train") if info.is_main else nullcontext():
        if info.is_main:  # the run's own files and its members' (predict_parts/ is predict's)
            n = remove_stale_temps(run, recursive=False) + sum(
                remove_stale_temps(m) for m in run.glob("member_*"))
            if n:
                log.info("removed %d temporary file(s) left in %s by an interrupted run", n, run)
        return _train_members(cfg, run, image_set, index, rt, info, m_hash, run_hash, on_epoch_end,
                              on_member_end)


def _train_members(rc: Config, run: Path, image_set: ImageSet, index: SampleIndex, rt: Runtime,
                   info: ddp.DistInfo, m_hash: str, run_hash: str,
                   on_epoch_end: Callable[[int, int, dict], None] | None,
                   on_member_end: Callable[[int, ChartCNN], None] | None) -> Path:
    t = rc.train
    left = [i for i in range(t.ensemble)
            if not is_done(run / f"member_{i}", section_hash({"member_hash": m_hash, "i": i}))]
    hooks = on_epoch_end is not None or on_member_end is not None
    workers = 1 if info.distributed or hooks else plan_workers(t.parallel_members, len(left), rt.device.type)
    if workers > 1:
        threads = threads_per_worker(workers, t.threads)
    else:
        threads = set_threads(t) if rt.device.type == "cpu" else torch.get_num_threads()
    if info.is_main:
        log.info("training %s: %d members (%d left) on %d in-sample images, %s %s, world size %d, "
                 "%d process(es) of %d thread(s)", t.model, t.ensemble, len(left), len(index),
                 rt.device, rt.precision, info.world_size, workers, threads)
    norm = compute_norm(image_set, index, t.norm)
    if is_regression(t.target):
        norm["target_scale"] = target_scale(index.labels)
    if info.is_main:
        save_resolved(rc, run)
        write_json(run / "norm.json", norm)
        write_json(run / "pool.json", index.info)
    ddp.barrier(info)
    members: dict[int, dict] = {}
    if workers > 1:
        jobs = {f"member {i}": (t, image_set.directory, index, norm, i, run, m_hash) for i in left}
        done, failed = run_jobs(_member_job, jobs, workers, threads, desc="members")
        if failed:
            raise RuntimeError(f"{run}: " + "; ".join(f"{k} failed ({v})" for k, v in sorted(failed.items()))
                               + "; the members that finished are kept: rerun `make train` to "
                               "train the rest")
        members = {int(k.split()[1]): v for k, v in done.items()}
    for i in range(t.ensemble):  # finished members load; with one process, the rest train here
        if i not in members:
            members[i] = _train_and_calibrate(t, image_set.directory, index, norm, i, run, rt, info, m_hash,
                                              on_epoch_end, on_member_end)
    summaries = [members[i] for i in range(t.ensemble)]
    if info.is_main:
        write_json(run / "summary.json", {
            "model": t.model, "members": summaries,
            "val_loss_mean": float(np.mean([m["best_val_loss"] for m in summaries])),
            "val_acc_mean": float(np.mean([m["best_val_acc"] for m in summaries])),
            "n_train": summaries[0]["n_train"], "n_val": summaries[0]["n_val"],
            "precision": rt.precision, "device": str(rt.device), "world_size": info.world_size,
            "processes": workers, "threads": threads})
        write_card(rc, run, rt, image_set_fingerprint(image_set), run_hash)
        mark_done(run, run_hash, "_TRAIN_DONE")
    ddp.barrier(info)
    return run


# --------------------------------------------------------------------------------------------------
# Loading


def load_member_dir(member_dir: Path, model_name: str, n_outputs: int = 2) -> ChartCNN:
    """A finished member's best weights while its run is being trained (before the run's model
    card exists); everything after training loads through pipeline.runs.load_ensemble.
    n_outputs: the output width (pipeline.config.model_outputs of the run's target)."""
    p = Path(member_dir) / "best.pt"
    if not p.exists():
        raise FileNotFoundError(f"no best.pt in {member_dir}: that member has not finished training")
    model = create_model(model_name) if n_outputs == 2 else create_model(model_name, n_outputs=n_outputs)
    model.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))
    return model.eval()
