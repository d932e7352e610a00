"""Out-of-sample prediction: every test-year image -> each member's and the ensemble's P(up).

    predict_run(cfg) -> run_dir/predictions.parquet

P(up) = softmax(logits)[:, 1] of each member (eval mode, best weights), mapped through the member's
validation-fitted calibration when ``train.calibration`` is not "none"; the ensemble P(up) is the
mean over members (METHOD 6). Every image of the test years gets a row, including those with a
missing label (label 2), so evaluation decides what to drop. Columns (docs/interfaces.md):
stock_id int32, ticker string, date datetime64, p_up float64, p_up_m0..p_up_m{k-1} float64,
ret_5d, ret_20d, ret_60d, ret_week, ret_month, ret_quarter float64, label int8 (the run's horizon;
2 = missing), mktcap float64, ewma_vol float64.

``ticker`` comes from ``stocks.parquet`` of the panel the image set was built from
(:func:`stock_tickers`); it is null for an image set not built from a panel by the image stage
(imported from the authors' files, whose PERMNOs come without an id map, or written by other code).

A regression run (``train.target`` return | vol_adjusted_return, METHOD 3.6) writes the same
columns: ``p_up`` and ``p_up_m<j>`` then hold the score to sort on, the ensemble's (members')
predicted target (a return, decimal, or a vol-adjusted return, in standard deviations over the
horizon), not a probability; the model card's ``target`` says which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.errors import InputError
from pipeline.progress import progress
from pipeline import paths
from pipeline.config import Config, section_hash
from pipeline.images.store import RETURN_COLUMNS, ImageSet, label_suffix
from pipeline.io import (atomic_path, folder_lock, is_done, mark_done, marker_path, read_json,
                         remove_stale_temps, write_npy)
from pipeline.procs import plan_workers, run_jobs, threads_per_worker
from pipeline.models.cnn import ChartCNN, fuse_for_inference
from pipeline.train import ddp
from pipeline.train.data import norm_for_year, normalise, oos_years
from pipeline.train.calibration import apply_calibration
from pipeline.runs import MODEL_CARD, ModelArtifactError, load_ensemble, read_model_card
from pipeline.train.loop import Runtime, check_images_current, resolve_runtime, set_threads

log = logging.getLogger(__name__)

# Bump when the meaning or the columns of predictions.parquet change: a table written before is then
# assembled again from its member parts (whose keys do not include this), nothing is re-predicted.
# 2: the ticker column.
PREDICTIONS_FORMAT = 2


def predict_proba(models: list[ChartCNN], images: np.ndarray, mean: float, std: float, rt: Runtime,
                  batch_size: int = 1024, desc: str = "") -> np.ndarray:
    """P(up) of each model for uint8 images (N, H, 3W) (a memory map is fine: read batch-wise).

    Returns float64 (N, len(models)): softmax(logits)[:, 1] per model, computed in float32 from
    logits produced under the runtime's precision; for a one-output (regression) model its output,
    the predicted target.
    """
    out = np.empty((len(images), len(models)), dtype=np.float64)
    # BatchNorm folded into the convs, pooling before the activation: same P(up), less work.
    models = [fuse_for_inference(m).to(rt.device) for m in models]
    if rt.channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        for s in progress(starts, desc=desc, leave=False, mininterval=2.0, disable=len(starts) < 4):
            x = normalise(np.asarray(images[s:s + batch_size]), mean, std).to(rt.device)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for j, m in enumerate(models):
                with rt.autocast():
                    logits = m(x)
                lg = logits.float()
                score = lg[:, 0] if lg.shape[1] == 1 else torch.softmax(lg, dim=1)[:, 1]
                out[s:s + len(x), j] = score.cpu().numpy()
    return out


def prediction_frame(labels: pd.DataFrame, probs: np.ndarray, suffix: str,
                     calibrations: list[dict] | None = None) -> pd.DataFrame:
    """The predictions table of one year: label table rows (N) + member probabilities (N, k).

    probs: each member's raw P(up) (softmax). With ``calibrations`` (one per member, method other
    than "none"), p_up_m{j} and p_up are the calibrated values and ``p_up_uncalibrated`` keeps the
    ensemble mean of the raw ones.
    """
    k = probs.shape[1]
    calibrated = calibrations is not None and any(c["method"] != "none" for c in calibrations)
    member_p = (np.column_stack([apply_calibration(probs[:, j], calibrations[j]) for j in range(k)])
                if calibrated else probs)
    df = pd.DataFrame({"stock_id": labels["stock_id"].to_numpy().astype(np.int32),
                       "date": pd.to_datetime(labels["date"]).to_numpy(),
                       "p_up": member_p.mean(axis=1)})
    if calibrated:
        df["p_up_uncalibrated"] = probs.mean(axis=1)
    for j in range(k):
        df[f"p_up_m{j}"] = member_p[:, j]
    for c in RETURN_COLUMNS:
        df[c] = labels[c].to_numpy().astype(np.float64)
    df["label"] = labels[f"label_{suffix}"].to_numpy().astype(np.int8)
    df["mktcap"] = labels["mktcap"].to_numpy().astype(np.float64)
    df["ewma_vol"] = labels["ewma_vol"].to_numpy().astype(np.float64)
    return df


def stock_tickers(rc: Config, image_set: ImageSet) -> tuple[pd.Series | None, Path | None]:
    """The id map the predictions name stocks with: (stock_id -> ticker, the file it was read from).

    An image set built by the image stage (its ``_DONE.json`` says ``built_from: "panel"``) takes
    the tickers of ``stocks.parquet`` in the experiment's panel, the panel
    :func:`pipeline.train.loop.check_images_current` has confirmed the set was built from. Any other
    set (imported from the authors' files, whose PERMNOs come without an id map, or written by other
    code) has no id map: (None, None), and the predictions' tickers are null.

    Raises:
        InputError naming the file when ``stocks.parquet`` is missing, lacks ``stock_id`` or
        ``ticker``, or lists a stock_id twice.
    """
    marker = marker_path(image_set.directory)
    if not marker.exists() or read_json(marker).get("built_from") != "panel":
        return None, None
    path = paths.panel_dir(rc) / "stocks.parquet"
    if not path.exists():
        raise InputError(f"{path} is missing: the panel the image set {image_set.directory} was built "
                         "from has no id map (stock_id -> ticker); rebuild it with `make panel`")
    stocks = pd.read_parquet(path)
    missing = [c for c in ("stock_id", "ticker") if c not in stocks.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing} (the panel's id map needs stock_id, ticker)")
    ids = stocks["stock_id"].to_numpy().astype(np.int64)
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        raise InputError(f"{path}: stock_id {int(ids[dup][0])} is listed more than once "
                         f"({int(dup.sum())} repeated ids)")
    return pd.Series(stocks["ticker"].astype("string").to_numpy(), index=pd.Index(ids, name="stock_id"),
                     name="ticker"), path


def add_tickers(df: pd.DataFrame, tickers: pd.Series | None, source: Path | None, where: str = "") -> None:
    """Insert ``ticker`` (pandas string dtype) after ``stock_id`` of the predictions ``df``, in place.

    tickers: stock_id -> ticker from :func:`stock_tickers` (``source`` the file it came from), or
    None for null tickers. A stock_id of ``df`` missing from ``tickers`` is an InputError naming
    ``source``, the ids and ``where`` (what ``df`` is).
    """
    ids = df["stock_id"].to_numpy().astype(np.int64)
    if tickers is None:
        col = pd.array(np.full(len(df), pd.NA, dtype=object), dtype="string")
    else:
        pos = tickers.index.get_indexer(ids)
        if (pos < 0).any():
            unknown = np.unique(ids[pos < 0])
            raise InputError(
                f"{source}: {len(unknown)} stock_id(s) of {where or 'the predictions'} are not in the "
                f"panel's id map: {unknown[:10].tolist()}{' ...' if len(unknown) > 10 else ''}; the "
                "image set and the panel disagree: rebuild the images (`make images`)")
        col = pd.array(tickers.to_numpy()[pos], dtype="string")
    df.insert(1, "ticker", col)


def member_part_key(trained: str, year: int, count: int, precision: str) -> str:
    """What determines a member's P(up) for one test year: its trained weights (``trained``, the hash
    of its completion marker, which covers the training settings and the image set but not the
    ensemble size), the inference precision and the year's image count. Growing an ensemble therefore
    reuses the predictions of the members it already had."""
    return section_hash({"member": trained, "year": year, "count": count, "precision": precision})


def _part_paths(run: Path, i: int, year: int) -> tuple[Path, Path, str]:
    """Member ``i``'s year-``year`` part: (array path, its folder, its marker name)."""
    parts_dir = run / "predict_parts"
    return parts_dir / f"m{i}_{year}.npy", parts_dir, f"_DONE_m{i}_{year}"


def _part_done(run: Path, i: int, year: int, key: str) -> bool:
    path, folder, name = _part_paths(run, i, year)
    return path.exists() and is_done(folder, key, name)


def predict_parts(rc: Config, members: list[int], rt: Runtime) -> list[int]:
    """Write ``predict_parts/m{i}_{year}.npy`` (float64 (N,), label-table order, raw softmax P(up);
    a regression run's predicted target)
    for members ``members`` of rc's run and every test year not already done; each year's images
    are read once (batch-wise from the memory map) for all the members that need them. Returns the
    members that predicted anything."""
    t = rc.train
    run = paths.run_dir(rc)
    image_set = ImageSet(paths.images_dir(rc, t.image_set))
    card = read_model_card(run)
    norm = card["norm"]
    trained = {i: card["members"][i]["trained"] for i in members}
    models: dict[int, ChartCNN] = {}
    busy: set[int] = set()
    for y in progress(oos_years(rc, image_set), desc=f"predict m{members}", mininterval=5.0):
        keys = {i: member_part_key(trained[i], y, image_set.count(y), rt.precision) for i in members}
        todo = [i for i in members if not _part_done(run, i, y, keys[i])]
        if not todo:
            continue
        imgs = image_set.images(y)
        n_labels = image_set.count(y)
        if n_labels != len(imgs):
            raise InputError(f"{image_set.directory}: year {y} has {len(imgs)} images but "
                             f"{n_labels} label rows")
        for i in todo:
            if i not in models:
                models[i] = load_ensemble(run, [i]).members[0]
        mean, std = norm_for_year(norm, y)
        t0 = time.perf_counter()
        probs = predict_proba([models[i] for i in todo], imgs, mean, std, rt,
                              rc.evaluate.predict_batch_size, desc=f"{y} m{todo}")
        dt = time.perf_counter() - t0
        log.info("year %d, member(s) %s: %d images in %.0f s (%.0f images/s per member)", y, todo,
                 len(imgs), dt, len(imgs) / dt if dt > 0 else float("nan"))
        for j, i in enumerate(todo):
            path, folder, name = _part_paths(run, i, y)
            write_npy(path, probs[:, j])
            mark_done(folder, keys[i], name)
        busy.update(todo)
    return sorted(busy)


def _predict_job(rc: Config, members: list[int]) -> list[int]:
    """Members ``members`` in a worker process (pipeline.procs); on CUDA on GPU members[0] modulo
    the GPUs visible."""
    rt = resolve_runtime(rc.train, ddp.resolve_device(rc.train.device, local_rank=members[0]))
    return predict_parts(rc, members, rt)


def predict_run(cfg: Config) -> Path:
    """Write run_dir/predictions.parquet for every test-year image; resumable per member and year
    (:func:`predict_parts`), skipped when done for the same trained run. Members predict in
    ``train.parallel_members`` processes when that is set (one per GPU on CUDA; on a CPU, by
    default, one process with all the threads). The table is written
    year by year, so a test set of millions of images never sits in memory at once. Returns the
    predictions path."""
    t = cfg.train
    run = paths.run_dir(cfg)
    train_marker = marker_path(run, "_TRAIN_DONE")
    if not train_marker.exists():
        raise FileNotFoundError(f"{run} is not a finished training run: run `make train` first")
    image_set = ImageSet(paths.images_dir(cfg, t.image_set))
    # The tickers are the panel's the set was built from: refuse a set stale against that panel.
    check_images_current(cfg, image_set)
    years = oos_years(cfg, image_set)
    rt = resolve_runtime(t, ddp.resolve_device(t.device))
    train_hash = read_json(train_marker)["hash"]
    settings = section_hash({"train": train_hash, "years": years,
                             "precision": rt.precision,
                             "counts": [image_set.count(y) for y in years],
                             "format": PREDICTIONS_FORMAT})
    out = run / "predictions.parquet"
    if is_done(run, settings, "_PREDICT_DONE") and out.exists():
        done = read_json(marker_path(run, "_PREDICT_DONE"))
        if done.get("trained") != train_hash:  # a marker from before it named the training
            mark_done(run, settings, "_PREDICT_DONE",
                      **{**{k: v for k, v in done.items() if k != "hash"}, "trained": train_hash})
        log.info("%s: predictions up to date, skipping", out)
        return out
    t_start = time.perf_counter()  # wall time of this invocation (parts done earlier are reused)
    tickers = stock_tickers(cfg, image_set)  # a broken id map fails before anything is predicted
    k = t.ensemble
    with folder_lock(run / "predict_parts", "predict"):
        n = (remove_stale_temps(run / "predict_parts")
             + remove_stale_temps(run, f".{out.name}.*.tmp", recursive=False))
        if n:
            log.info("removed %d temporary file(s) left in %s by an interrupted run", n, run)
        trained = [m["trained"] for m in read_model_card(run)["members"]]
        if len(trained) != k:
            raise ModelArtifactError(f"{run / MODEL_CARD} lists {len(trained)} members but "
                                     f"train.ensemble is {k}: run `make train`")
        left = [i for i in range(k) if not all(
            _part_done(run, i, y, member_part_key(trained[i], y, image_set.count(y), rt.precision))
            for y in years)]
        # On a CPU one process with every thread predicts faster than one process per member
        # (make bench-stage, quiet 2-core machine: 0.91x for two 1-thread processes), because
        # inference already scales with threads; members go to separate processes there only when
        # train.parallel_members asks for it. On CUDA: one process per GPU.
        requested = t.parallel_members if t.parallel_members is not None or rt.device.type == "cuda" else 1
        workers = plan_workers(requested, len(left), rt.device.type)
        if workers > 1:
            groups = {f"members {left[w::workers]}": (cfg, left[w::workers]) for w in range(workers)}
            threads = threads_per_worker(workers, t.threads)
            log.info("predicting members %s in %d processes of %d thread(s)", left, workers, threads)
            _, failed = run_jobs(_predict_job, groups, workers, threads, desc="predict")
            if failed:
                raise RuntimeError(f"{run}: " + "; ".join(f"{g} failed ({v})" for g, v in sorted(failed.items()))
                                   + "; the years they finished are kept: rerun `make predict`")
        elif left:
            if rt.device.type == "cpu":
                set_threads(t)
            predict_parts(cfg, left, rt)
        rows = _write_predictions(cfg, run, image_set, years, out, tickers)
    # ``trained``: the training these predictions come from (runs.require_current_predictions).
    mark_done(run, settings, "_PREDICT_DONE", trained=train_hash, rows=rows,
              seconds=round(time.perf_counter() - t_start, 1))
    return out


def _write_predictions(rc: Config, run: Path, image_set: ImageSet, years: list[int], out: Path,
                       id_map: tuple[pd.Series | None, Path | None]) -> int:
    """Assemble predictions.parquet from the member parts, one row group per test year, with each
    stock's ticker from ``id_map`` (:func:`stock_tickers`); the rows."""
    t = rc.train
    suffix = label_suffix(t.horizon, t.label_return)
    calibrations = ([m["calibration"] for m in read_model_card(run)["members"]]
                    if t.calibration != "none" else None)
    tickers, source = id_map
    if tickers is None:
        log.info("%s was not built from a panel by the image stage: no id map, tickers left null",
                 image_set.directory)

    def frames() -> Iterator[pd.DataFrame]:
        for y in years:
            labels = image_set.labels(y)
            parts = [_part_paths(run, i, y)[0] for i in range(t.ensemble)]
            columns = [np.load(p) for p in parts]
            for p, c in zip(parts, columns):
                if c.shape != (len(labels),):
                    raise InputError(f"{p}: {c.shape} predictions per member but {len(labels)} "
                                     f"label rows for year {y}; delete that file and predict again")
            df = prediction_frame(labels, np.column_stack(columns), suffix, calibrations)
            add_tickers(df, tickers, source, where=f"{image_set.directory} year {y}")
            log.info("year %d: %d images, mean P(up) %.4f", y, len(df), float(df["p_up"].mean()))
            yield df

    return write_year_frames(out, frames())


def write_year_frames(out: Path, frames: Iterable[pd.DataFrame]) -> int:
    """Write predictions.parquet atomically from per-year frames (one row group each, the first
    frame's schema for all, so a year whose column is all null keeps the type); the rows written."""
    rows = 0
    with atomic_path(out) as tmp:
        writer = None
        try:
            for df in frames:
                table = pa.Table.from_pandas(df, preserve_index=False,
                                             schema=writer.schema if writer else None)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                rows += len(df)
        finally:
            if writer is not None:
                writer.close()
    return rows
