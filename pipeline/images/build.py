"""Build one image set (``"I{W}/{freq}"``) from the canonical panel (docs/method.md 2-3).

An aggregated set ``"I{B}x{k}/{freq}"`` (METHOD 11) is planned and labelled like the daily set of
its window ``W = B*k`` (same candidates, history, labels and image dates); each task turns the
2W-record blocks into 2B bars of k days (pipeline.images.aggregate) before rendering B-bar charts.

Plan (this process, once):
    read the panel's keys (stock_id, date, ret, mktcap) for all years, check the contract,
    take the calendar (every panel date), its period ends, every (stock, period end) where the
    stock is listed within [images.start_year, images.end_year]; those without a record are R0
    rejections; the others get their labels computed over each stock's whole history.
Tasks (executor, one per (year, shard of images.stocks_per_shard stocks)):
    read the shard's OHLCV rows for the years the blocks need, gather the 2W-record blocks,
    render them, and write ``_parts/<year>/shard_<k>.{npy,parquet}`` plus ``.json`` (rejection
    counts; written last, it marks the part done, so an interrupted build resumes).
Merge (this process): per year, concatenate the parts in shard order (shards are consecutive
    stock ranges, so rows come out sorted by (stock_id, date)) into ``images_{year}.npy`` and
    ``labels_{year}.parquet``; write ``rejections.json``, ``config.yaml``, ``provenance.json``
    (commit, versions, machine: not hashed) and ``_DONE.json`` keyed by a hash of the settings and
    of the panel; delete ``_parts``.

Every window that yields no image is counted by reason; none is silently dropped.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline import paths
from pipeline.config import Config, image_set_spec, parse_image_set, save_resolved, section_hash
from pipeline.images import labels as labels_mod
from pipeline.images import windows
from pipeline.images.executor import Executor
from pipeline.images.store import IMAGE_SHAPES, LABEL_TABLE_COLUMNS
from pipeline.io import (atomic_path, folder_lock, is_done, mark_done, marker_path, read_json,
                         remove_stale_temps, require_done, write_json, write_npy, write_parquet)
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PANEL_COLUMNS, PanelContractError, read_meta

log = logging.getLogger(__name__)

# Bump when the meaning of the artifacts changes, so finished sets are rebuilt.
BUILD_VERSION = 1
KEY_COLUMNS = ["stock_id", "date", "ret", "mktcap"]
# Windows rendered per call inside a task: bounds memory (I60 blocks are 120 x 6 float64).
RENDER_CHUNK = 8192
# METHOD 2.9: at least 6 months of history before the first image year.
MIN_HISTORY_DAYS = 183


# --------------------------------------------------------------------------------------------------
# Panel keys


@dataclass
class PanelKeys:
    """The panel's key columns in (stock_id, date) order, as flat arrays.

    stock_ids (k,) int32 unique ids; offsets (k+1,) int64 row ranges; days int64 (N,) days since
    the epoch; ret, mktcap float64 (N,); calendar datetime64[ns] (c,) every distinct panel date.
    """

    stock_ids: np.ndarray
    offsets: np.ndarray
    days: np.ndarray
    ret: np.ndarray
    mktcap: np.ndarray
    calendar: np.ndarray


def _check_year_keys(sid: np.ndarray, days: np.ndarray, ret: np.ndarray, year: int,
                     where: str) -> None:
    """Contract checks on one year file's keys (cheap numpy equivalents of check_contract)."""
    if np.isnan(ret).any():
        i = int(np.flatnonzero(np.isnan(ret))[0])
        raise PanelContractError(f"{where}: missing ret at row {i} (stock_id={sid[i]}, "
                                 f"date={np.datetime64(int(days[i]), 'D')}); rows with a missing "
                                 "return must be removed (METHOD 2.7)")
    lo = int(np.datetime64(f"{year}-01-01", "D").astype(np.int64))
    hi = int(np.datetime64(f"{year + 1}-01-01", "D").astype(np.int64))
    outside = (days < lo) | (days >= hi)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise PanelContractError(f"{where}: row {i} dated {np.datetime64(int(days[i]), 'D')} "
                                 f"is not in {year}")
    if len(sid) > 1:
        bad = (sid[1:] < sid[:-1]) | ((sid[1:] == sid[:-1]) & (days[1:] <= days[:-1]))
        if bad.any():
            i = int(np.flatnonzero(bad)[0]) + 1
            what = ("duplicate (stock_id, date)" if sid[i] == sid[i - 1] and days[i] == days[i - 1]
                    else "rows not sorted by (stock_id, date)")
            raise PanelContractError(f"{where}: {what} at row {i} (stock_id={sid[i]}, "
                                     f"date={np.datetime64(int(days[i]), 'D')})")


def read_panel_keys(panel_dir: str | Path) -> PanelKeys:
    """Read and check the key columns of every year of a panel (METHOD 2.7 contract).

    Raises PanelContractError naming the file and row for a missing return, unsorted or
    duplicate (stock_id, date) rows, a date outside its year partition, or a date with a time.
    """
    panel_dir = Path(panel_dir)
    meta = read_meta(panel_dir)
    sids, days_l, rets, caps, cal = [], [], [], [], []
    for y in meta.years:
        f = panel_dir / f"year={y}" / "part.parquet"
        if not f.exists():
            raise FileNotFoundError(f"panel {panel_dir}: meta.json lists {y} but {f} is missing")
        have = set(pq.read_schema(f).names)
        missing = [c for c in PANEL_COLUMNS if c not in have]
        if missing:
            raise PanelContractError(f"{f}: missing columns {missing}")
        t = pq.read_table(f, columns=KEY_COLUMNS)
        sid = t.column("stock_id").to_numpy()
        if not np.issubdtype(sid.dtype, np.integer):
            raise PanelContractError(f"{f}: stock_id must be integer, got {sid.dtype}")
        d = t.column("date").to_numpy()
        if not np.issubdtype(d.dtype, np.datetime64):
            raise PanelContractError(f"{f}: date must be datetime64, got {d.dtype}")
        try:
            day = windows.to_days(d)
        except ValueError as e:
            raise PanelContractError(f"{f}: {e}") from None
        ret = t.column("ret").to_numpy(zero_copy_only=False).astype(np.float64)
        _check_year_keys(sid, day, ret, y, str(f))
        sids.append(sid.astype(np.int32))
        days_l.append(day)
        cal.append(np.unique(day))
        rets.append(ret)
        caps.append(t.column("mktcap").to_numpy(zero_copy_only=False).astype(np.float64))
    if not sids:
        raise PanelContractError(f"panel {panel_dir} has no rows")
    sid = np.concatenate(sids)
    del sids
    # Each year is sorted by (stock, date) and years follow in time, so a stable sort on the
    # stock id alone yields (stock, date) order (timsort merges the sorted runs quickly).
    order = np.argsort(sid, kind="stable")
    sid = sid[order]
    cols = []
    for parts in (days_l, rets, caps):  # one column at a time bounds the peak memory
        col = np.concatenate(parts)
        parts.clear()
        cols.append(col[order])
        del col
    stock_ids, offsets = windows.stock_offsets(sid)
    calendar = windows.days_to_ns(np.unique(np.concatenate(cal)))
    return PanelKeys(stock_ids, offsets, cols[0], cols[1], cols[2], calendar)


# --------------------------------------------------------------------------------------------------
# Plan


@dataclass
class PartTask:
    """One (year, shard) unit of work; picklable, small (labels of its images only)."""

    panel_dir: str
    part_stem: str  # .../_parts/<year>/shard_<k>; .npy/.parquet/.json are added
    year: int
    shard: int
    window: int  # bars drawn (the image size)
    ma: bool
    volume: bool
    stock_ids: np.ndarray  # int32, sorted: the shard's stocks
    read_years: list[int]  # panel years holding every block's rows
    labels: pd.DataFrame  # LABEL_TABLE_COLUMNS of the candidate images, (stock_id, date) order
    n_hist: np.ndarray  # int64 real rows of each candidate's block (1..2W)
    r0: int  # R0 rejections of these stocks in this year
    settings_hash: str
    bar_days: int = 1  # trading days per bar (METHOD 11); n_hist and the blocks count days


@dataclass
class Plan:
    tasks: list[PartTask]
    r0_by_year: dict[int, int]
    years: list[int]


def plan_image_set(keys: PanelKeys, panel_dir: str | Path, parts_dir: Path, window: int,
                   freq: str, start_year: int, end_year: int, mode: str, stocks_per_shard: int,
                   ma: bool, volume: bool, settings_hash: str, bar_days: int = 1) -> Plan:
    """Candidates, R0 counts, labels and (year, shard) tasks of one image set (``window`` bars of
    ``bar_days`` days: the history, and so the rejections and labels, are those of the
    ``window * bar_days``-day daily set)."""
    if stocks_per_shard < 1:
        raise InputError(f"images.stocks_per_shard must be >= 1, got {stocks_per_shard}")
    days = keys.days
    pe = windows.period_ends(keys.calendar, freq)
    pe_years = pe.astype("datetime64[Y]").astype(np.int64) + 1970
    pe = pe[(pe_years >= start_year) & (pe_years <= end_year)]
    pe_days = windows.to_days(pe)
    cands = windows.find_candidates(days, keys.offsets, pe_days)
    cand_year = pe.astype("datetime64[Y]").astype(np.int64)[cands.pe_index] + 1970
    have = cands.row >= 0
    rows = cands.row[have]
    stock_idx = cands.stock_index[have]
    n_hist = windows.history_lengths(rows, keys.offsets[stock_idx], window * bar_days)
    table = labels_mod.label_table(keys.stock_ids, keys.offsets, keys.days, keys.ret,
                                   keys.mktcap, keys.calendar, rows, mode)
    block_start_year = (days[rows - n_hist + 1].astype("datetime64[D]").astype("datetime64[Y]")
                        .astype(np.int64) + 1970)
    img_year = cand_year[have]
    r0_year = cand_year[~have]
    r0_stock = cands.stock_index[~have]
    years = list(range(start_year, end_year + 1))
    r0_by_year = {y: int((r0_year == y).sum()) for y in years}
    tasks: list[PartTask] = []
    for y in years:  # a loop over years and shards only; the data work inside is vectorised
        in_y = np.flatnonzero(img_year == y)
        r0_y = r0_stock[r0_year == y]
        stocks_y = np.unique(np.r_[stock_idx[in_y], r0_y])
        for k in range(0, len(stocks_y), stocks_per_shard):
            shard_stocks = stocks_y[k:k + stocks_per_shard]
            sel = in_y[np.isin(stock_idx[in_y], shard_stocks)]
            first_year = int(block_start_year[sel].min()) if len(sel) else y
            tasks.append(PartTask(
                panel_dir=str(panel_dir),
                part_stem=str(parts_dir / str(y) / f"shard_{k // stocks_per_shard:04d}"),
                year=y, shard=k // stocks_per_shard, window=window, ma=ma, volume=volume,
                stock_ids=keys.stock_ids[shard_stocks].astype(np.int32),
                read_years=list(range(first_year, y + 1)),
                labels=table.iloc[sel].reset_index(drop=True),
                n_hist=n_hist[sel],
                r0=int(np.isin(r0_y, shard_stocks).sum()),
                settings_hash=settings_hash, bar_days=bar_days,
            ))
    return Plan(tasks, r0_by_year, years)


# --------------------------------------------------------------------------------------------------
# One task


def _read_shard(task: PartTask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stock ids (N,), days (N,), values (N, 6) RENDER_COLUMNS) of the shard, panel order."""
    cols = ["stock_id", "date", *windows.RENDER_COLUMNS]
    ids = pa.array(task.stock_ids.astype(np.int32))
    sids, dys, vals = [], [], []
    for y in task.read_years:
        f = Path(task.panel_dir) / f"year={y}" / "part.parquet"
        if not f.exists():
            continue
        # The range filter lets pyarrow skip row groups by their stock_id statistics (panels
        # written with several row groups per year); is_in then keeps exactly the shard.
        # use_threads=False: parallelism comes from the executor's processes; pyarrow's own
        # thread pool would only oversubscribe the cores.
        t = pq.read_table(f, columns=cols, use_threads=False,
                          filters=[("stock_id", ">=", int(task.stock_ids[0])),
                                   ("stock_id", "<=", int(task.stock_ids[-1]))])
        mask = pc.is_in(t.column("stock_id").cast(pa.int32()), value_set=ids)
        t = t.filter(mask)
        v = np.column_stack([t.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                             for c in windows.RENDER_COLUMNS]) if t.num_rows else \
            np.zeros((0, len(windows.RENDER_COLUMNS)))
        for j, c in enumerate(("open", "high", "low", "close")):
            bad = v[:, j] <= 0
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise PanelContractError(
                    f"{f}: non-positive {c} (stock_id={t.column('stock_id')[i].as_py()}, "
                    f"date={t.column('date')[i].as_py()}); missing prices must be NaN")
        sids.append(t.column("stock_id").to_numpy().astype(np.int32))
        dys.append(windows.to_days(t.column("date").to_numpy()))
        vals.append(v)
    sid = np.concatenate(sids) if sids else np.zeros(0, np.int32)
    order = np.argsort(sid, kind="stable")  # years in order, each (stock, date)-sorted
    return sid[order], np.concatenate(dys)[order], np.concatenate(vals)[order]


def _task_counts(status: np.ndarray) -> dict[int, int]:
    codes, n = np.unique(status[status >= 0], return_counts=True)
    return {int(c): int(k) for c, k in zip(codes, n)}


def run_part(task: PartTask) -> dict:
    """Render one (year, shard) and write its part files; skip it if already done.

    Returns {"year", "shard", "n_images", "rejections": {code: count}}.
    """
    from pipeline.images.aggregate import aggregate_bars
    from pipeline.images.render import render_windows

    stem = Path(task.part_stem)
    marker = stem.with_suffix(".json")
    if marker.exists():
        info = read_json(marker)
        if info.get("hash") == task.settings_hash:
            return info
    lab = task.labels
    n = len(lab)
    h, w3 = IMAGE_SHAPES[task.window]
    images = np.zeros((n, h, w3), dtype=np.uint8)  # the renderer's shape with or without volume
    status = np.full(n, -1, dtype=np.int8)
    if n:  # a shard may hold only R0 rejections in this year: nothing to read then
        sid, day, values = _read_shard(task)
        ids, offsets = windows.stock_offsets(sid)
        q_sid = lab["stock_id"].to_numpy()
        q_day = windows.to_days(lab["date"].to_numpy())
        if len(ids) == 0:
            raise RuntimeError(f"part {stem}: no panel rows for the shard's stocks")
        k_c = np.minimum(np.searchsorted(ids, q_sid), len(ids) - 1)
        if not (ids[k_c] == q_sid).all():
            raise RuntimeError(f"part {stem}: image stocks missing from the shard's panel rows")
        # Locate each image row inside its stock's rows.
        lo, hi = offsets[k_c], offsets[k_c + 1]
        row_stock = np.repeat(np.arange(len(ids)), np.diff(offsets))
        day0 = int(min(day.min(), q_day.min()))
        span = int(max(day.max(), q_day.max())) - day0 + 1
        keys = windows.composite_keys(row_stock, day, day0, span)
        query = windows.composite_keys(k_c, q_day, day0, span)
        pos_c = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        if not (keys[pos_c] == query).all():
            raise RuntimeError(f"part {stem}: an image date has no panel row")
        if ((pos_c - lo + 1) < task.n_hist).any() or (pos_c >= hi).any():
            raise RuntimeError(f"part {stem}: loaded years {task.read_years} do not hold the "
                               "blocks' history")
        for a in range(0, n, RENDER_CHUNK):
            b = min(n, a + RENDER_CHUNK)
            n_h = task.n_hist[a:b]
            block = windows.gather_blocks(values, pos_c[a:b], n_h, task.window * task.bar_days)
            if task.bar_days > 1:
                block, n_h = aggregate_bars(block, n_h, task.bar_days)
            images[a:b], status[a:b] = render_windows(block, n_h, task.window,
                                                      ma=task.ma, volume=task.volume)
    ok = status == -1
    counts = _task_counts(status)
    if task.r0:
        counts[windows.R0_CODE] = task.r0
    write_npy(stem.with_suffix(".npy"), images[ok])
    write_parquet(stem.with_suffix(".parquet"), lab[ok].reset_index(drop=True))
    info = {"hash": task.settings_hash, "year": task.year, "shard": task.shard,
            "n_images": int(ok.sum()), "rejections": {str(c): v for c, v in counts.items()}}
    write_json(marker, info)  # last: the part is done
    return info


# --------------------------------------------------------------------------------------------------
# Merge and the whole set


def _merge_year(out_dir: Path, year: int, stems: list[Path], shape: tuple[int, int]) -> int:
    """Concatenate part files (in shard order) into the year's array and label table.

    The image bytes are copied file to file by the kernel (copy_file_range: no pass through this
    process's memory, and no page faults of a writable memory map) behind a fresh .npy header.
    """
    arrays = [np.load(s.with_suffix(".npy"), mmap_mode="r") for s in stems]
    n = int(sum(len(a) for a in arrays))
    if n == 0:
        return 0
    for s, a in zip(stems, arrays):
        if a.dtype != np.uint8 or a.shape[1:] != tuple(shape) or not a.flags.c_contiguous:
            raise RuntimeError(f"{s.with_suffix('.npy')}: {a.dtype} {a.shape}, expected uint8 "
                               f"(N, {shape[0]}, {shape[1]}); delete the image set and rebuild it")
    with atomic_path(out_dir / f"images_{year}.npy") as tmp:
        with open(tmp, "wb") as dst:
            np.lib.format.write_array_header_1_0(dst, {"descr": "|u1", "fortran_order": False,
                                                       "shape": (n, *shape)})
            for s, a in zip(stems, arrays):
                _append_file_bytes(dst, s.with_suffix(".npy"), a.offset, a.nbytes)
    del arrays
    lab = pd.concat([pd.read_parquet(s.with_suffix(".parquet")) for s in stems],
                    ignore_index=True)
    key = lab["stock_id"].to_numpy().astype(np.int64), windows.to_days(lab["date"].to_numpy())
    ds, dd = np.diff(key[0]), np.diff(key[1])
    if len(lab) > 1 and not ((ds > 0) | ((ds == 0) & (dd > 0))).all():
        raise RuntimeError(f"year {year}: merged rows are not sorted by (stock_id, date)")
    write_parquet(out_dir / f"labels_{year}.parquet", lab[LABEL_TABLE_COLUMNS])
    return n


def _append_file_bytes(dst, src_path: Path, offset: int, nbytes: int) -> None:
    """Append ``nbytes`` of ``src_path`` from ``offset`` to the open file ``dst`` (kernel copy where
    the OS has one, else buffered reads)."""
    dst.flush()
    with open(src_path, "rb") as src:
        left, pos = nbytes, offset
        copy = getattr(os, "copy_file_range", None)
        while left and copy is not None:
            try:
                k = copy(src.fileno(), dst.fileno(), left, pos)
            except OSError:  # e.g. across file systems on old kernels: fall back below
                break
            if k == 0:
                break
            left, pos = left - k, pos + k
        if left:
            src.seek(pos)
            dst.seek(0, os.SEEK_END)
            while left:
                chunk = src.read(min(left, 1 << 24))
                if not chunk:
                    raise RuntimeError(f"{src_path}: ended {left} bytes early")
                dst.write(chunk)
                left -= len(chunk)
            dst.flush()
    dst.seek(0, os.SEEK_END)


def reason_names() -> dict[int, str]:
    from pipeline.images.render import REJECTION_REASONS

    names = dict(REJECTION_REASONS)
    names.setdefault(windows.R0_CODE, "R0_no_record_on_date")
    return names


def settings_for(cfg: Config, image_set: str, panel_dir: Path) -> dict:
    """What an image set depends on: its own settings and the panel it was built from."""
    spec = image_set_spec(image_set)
    im = cfg.images
    panel_marker = panel_dir / "_DONE.json"
    out = {
        "version": BUILD_VERSION, "window": spec.bars, "freq": spec.freq, "ma": im.ma, "volume": im.volume,
        "start_year": im.start_year, "end_year": im.end_year,
        "period_ret_mode": im.period_ret_mode, "calendar": im.calendar,
        "stocks_per_shard": im.stocks_per_shard,
        "panel_meta": asdict(read_meta(panel_dir)),
        "panel_done": read_json(panel_marker).get("hash") if panel_marker.exists() else None,
    }
    if spec.aggregated:  # only then: the hashes of daily sets built before stay valid
        out["bar_days"] = spec.bar_days
    return out


def build_image_set(cfg: Config, image_set: str, executor: Executor,
                    panel_dir: str | Path | None = None,
                    out_dir: str | Path | None = None) -> Path:
    """Build (or resume, or skip if done) one image set; returns its directory.

    panel_dir / out_dir default to paths.panel_dir(cfg) / paths.images_dir(cfg, image_set).
    """
    parse_image_set(image_set)  # a malformed name fails before anything is read
    panel_dir = Path(panel_dir) if panel_dir is not None else paths.panel_dir(cfg)
    out_dir = Path(out_dir) if out_dir is not None else paths.images_dir(cfg, image_set)
    if cfg.images.start_year > cfg.images.end_year:
        raise InputError(f"images.start_year {cfg.images.start_year} > images.end_year "
                         f"{cfg.images.end_year}")
    require_done(panel_dir, panel_settings_hash(cfg), "the panel", "panel")
    h = image_set_hash(cfg, image_set, panel_dir)
    if is_done(out_dir, h):
        log.info("%s: already built with these settings (%s), skipping", out_dir, h)
        return out_dir
    with folder_lock(out_dir, "images"):
        n = remove_stale_temps(out_dir)
        if n:
            log.info("removed %d temporary file(s) left in %s by an interrupted run", n, out_dir)
        return _build(cfg, image_set, executor, panel_dir, out_dir, h)


def image_set_hash(cfg: Config, image_set: str, panel_dir: Path) -> str:
    """The hash an image set built from ``panel_dir`` under ``cfg`` has in its completion marker."""
    return section_hash(settings_for(cfg, image_set, panel_dir))


def _build(cfg: Config, image_set: str, executor: Executor, panel_dir: Path, out_dir: Path,
           h: str) -> Path:
    spec = image_set_spec(image_set)
    w, freq = spec.bars, spec.freq
    im = cfg.images
    t0 = time.perf_counter()
    keys = read_panel_keys(panel_dir)
    # A rebuild (other settings or panel) must not leave the old marker claiming the set is done.
    marker_path(out_dir).unlink(missing_ok=True)
    first = keys.calendar[0].astype("datetime64[D]")
    need = np.datetime64(f"{im.start_year}-01-01") - np.timedelta64(MIN_HISTORY_DAYS, "D")
    if first > need:
        log.warning("panel starts %s, less than 6 months before %d: early images lack history "
                    "(R1 rejections, no MA)", first, im.start_year)
    # Absolute paths: Dask workers on other machines do not share this process's cwd.
    parts_dir = out_dir.resolve() / "_parts"
    plan = plan_image_set(keys, panel_dir.resolve(), parts_dir, w, freq, im.start_year, im.end_year,
                          im.period_ret_mode, im.stocks_per_shard, im.ma, im.volume, h,
                          bar_days=spec.bar_days)
    del keys
    log.info("%s: %d candidate images in %d tasks, %d R0", image_set,
             sum(len(t.labels) for t in plan.tasks), len(plan.tasks), sum(plan.r0_by_year.values()))
    t1 = time.perf_counter()
    # Largest tasks first: the pool's tail is then made of small tasks (better balance).
    order = sorted(range(len(plan.tasks)), key=lambda i: -len(plan.tasks[i].labels))
    results = executor.map(run_part, [plan.tasks[i] for i in order], desc=f"images {image_set}")
    t2 = time.perf_counter()
    names = reason_names()
    rejections: dict[str, dict[str, int]] = {}
    total = 0
    shape = IMAGE_SHAPES[w]
    written = set()
    for y in plan.years:
        stems = [Path(t.part_stem) for t in plan.tasks if t.year == y]
        counts = {name: 0 for name in names.values()}
        for r in results:
            if r["year"] == y:
                for c, v in r["rejections"].items():
                    counts[names[int(c)]] += v
        rejections[str(y)] = counts
        n = _merge_year(out_dir, y, stems, shape)
        if n:
            written.add(y)
        total += n
        log.info("%s %d: %d images, rejected %s", image_set, y, n,
                 {k: v for k, v in counts.items() if v})
    for p in [*out_dir.glob("images_*.npy"), *out_dir.glob("labels_*.parquet")]:
        if int(p.stem.split("_")[1]) not in written:  # stale file of an earlier build
            p.unlink()
    write_json(out_dir / "rejections.json", rejections)
    save_resolved(cfg, out_dir)
    write_provenance(out_dir, image_set, panel_dir)
    t3 = time.perf_counter()
    timing = {"plan_s": round(t1 - t0, 2), "render_s": round(t2 - t1, 2),
              "merge_s": round(t3 - t2, 2)}
    mark_done(out_dir, h, image_set=image_set, built_from="panel", n_images=total,
              n_rejected=int(sum(sum(v.values()) for v in rejections.values())), **timing)
    shutil.rmtree(parts_dir, ignore_errors=True)
    log.info("%s: %d images in %.1f s (%s)", image_set, total, t3 - t0, timing)
    return out_dir


def write_provenance(out_dir: Path, image_set: str, panel_dir: Path) -> None:
    """``provenance.json`` of a built set: ``stage`` ("images"), ``image_set``, ``inputs`` (the
    panel folder, resolved, and its marker hash) and :func:`pipeline.runs.provenance` (commit,
    package versions, machine). Not part of the settings hash: it says how the set was made, not
    what it depends on, so a rerun with the same settings still skips."""
    from pipeline.runs import provenance  # here, not at the top: the workers need no torch

    marker = marker_path(panel_dir)
    write_json(out_dir / "provenance.json", {
        "stage": "images", "image_set": image_set,
        "inputs": {"panel": str(panel_dir.resolve()),
                   "panel_hash": read_json(marker).get("hash") if marker.exists() else None},
        **provenance()})


def make_training_inputs(cfg: Config) -> Path:
    """The panel stage, then the image set ``cfg.train.image_set`` (each skipped when done): the
    inputs of a training run, for drivers over the stages (studies, benchmarks). Returns the image
    set's folder."""
    from pipeline.images.executor import make_executor
    from pipeline.panel.build import make_panel

    make_panel(cfg)
    executor = make_executor(cfg.images)
    try:
        return build_image_set(cfg, cfg.train.image_set, executor)
    finally:
        executor.close()
