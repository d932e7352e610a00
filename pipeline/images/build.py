"""Build one image set (``"I{W}/{freq}"``) from the canonical panel (docs/method.md 2-3).

An aggregated set ``"I{B}x{k}/{freq}"`` (METHOD 11) is planned and labelled like the daily set of
its window ``W = B*k`` (same candidates, history, labels and image dates); each task turns the
2W-record blocks into 2B bars of k days (pipeline.images.aggregate) before rendering B-bar charts.

Plan (this process, once):
    read the panel's keys (stock_id, date, ret, mktcap) for all years, check the contract,
    take the calendar (every panel date), its period ends, every (stock, period end) where the
    stock is listed within [images.start_year, images.end_year]; those without a record are R0
    rejections, those with fewer than W bars of history R1; the others get their labels
    computed over each stock's whole history. Each is given its slot in its year's array: its
    index among the year's windows in (stock_id, date) order.
Tasks (executor, one per (year, shard of images.stocks_per_shard stocks)):
    read the shard's OHLCV rows (only the row groups of its stocks, only from its oldest block
    row on) for the years the blocks need, gather the 2W-record blocks, render them, write the
    images into the task's slice of ``_parts/images_<year>.npy`` (a .npy pre-sized for every
    window of the year; the tasks of a year share it, each writing its own byte range), then
    ``_parts/<year>/shard_<k>.json`` (rejection counts and the positions the renderer rejected;
    written last, it marks the part done, so an interrupted build resumes).
Merge (this process): per year, rename the array into place as ``images_{year}.npy`` (or, where
    the renderer rejected a window and left a gap, copy the tasks' runs of images behind a header
    of the true count), write ``labels_{year}.parquet`` once from the planned label rows of the
    images; write ``rejections.json``, ``config.yaml``, ``provenance.json`` (commit, versions,
    machine: not hashed) and ``_DONE.json`` keyed by a hash of the settings and of the panel;
    delete ``_parts``.

Every window that yields no image is counted by reason; none is silently dropped.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline import paths
from pipeline.config import Config, image_set_spec, parse_image_set, save_resolved, section_hash
from pipeline.errors import InputError
from pipeline.images import labels as labels_mod
from pipeline.images import windows
from pipeline.images.executor import Executor
from pipeline.images.store import IMAGE_SHAPES, LABEL_TABLE_COLUMNS
from pipeline.io import (atomic_path, folder_lock, is_done, mark_done, marker_path, read_json,
                         remove_stale_temps, require_done, write_json, write_parquet)
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PANEL_COLUMNS, PanelContractError, read_meta
from pipeline.procs import usable_cores

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


@dataclass
class _YearKeys:
    """The checked key columns of one panel year file (rows in file order, (stock, date))."""

    stock_ids: np.ndarray  # int64 (k,) the year's stocks, in file order
    lengths: np.ndarray  # int64 (k,) their row counts
    days: np.ndarray  # int64 (n,) days since the epoch
    ret: np.ndarray  # float64 (n,)
    mktcap: np.ndarray  # float64 (n,)
    calendar: np.ndarray  # int64 (d,) the year's trading days, sorted


def _read_year_keys(panel_dir: Path, year: int) -> _YearKeys:
    """Read and check the key columns of one year file (see :func:`read_panel_keys`)."""
    f = panel_dir / f"year={year}" / "part.parquet"
    if not f.exists():
        raise FileNotFoundError(f"panel {panel_dir}: meta.json lists {year} but {f} is missing")
    pf = pq.ParquetFile(f)
    have = set(pf.schema_arrow.names)
    missing = [c for c in PANEL_COLUMNS if c not in have]
    if missing:
        raise PanelContractError(f"{f}: missing columns {missing}")
    # use_threads=False: the years are read in parallel by read_panel_keys' threads.
    t = pf.read(columns=KEY_COLUMNS, use_threads=False)
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
    _check_year_keys(sid, day, ret, year, str(f))
    ids, off = windows.stock_offsets(sid)
    # The year's trading days (all inside the year, checked above) without a sort.
    lo = int(np.datetime64(f"{year}-01-01", "D").astype(np.int64))
    present = np.zeros(367, dtype=bool)
    present[day - lo] = True
    return _YearKeys(ids.astype(np.int64), np.diff(off), day, ret,
                     t.column("mktcap").to_numpy(zero_copy_only=False).astype(np.float64),
                     lo + np.flatnonzero(present))


def read_panel_keys(panel_dir: str | Path, threads: int | None = None) -> PanelKeys:
    """Read and check the key columns of every year of a panel (METHOD 2.7 contract).

    The year files are read by ``threads`` threads (default: the usable cores; pyarrow and numpy
    release the GIL); a bad file is reported as it would be reading the years one by one (the
    earliest bad year's error).

    Raises PanelContractError naming the file and row for a missing return, unsorted or
    duplicate (stock_id, date) rows, a date outside its year partition, or a date with a time.
    """
    panel_dir = Path(panel_dir)
    meta = read_meta(panel_dir)
    n_threads = max(1, min(threads or usable_cores(), len(meta.years)))
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="panel-keys") as pool:
        years = list(pool.map(lambda y: _read_year_keys(panel_dir, y), meta.years))
    days_l = [k.days for k in years]
    rets = [k.ret for k in years]
    caps = [k.mktcap for k in years]
    seg_sid = [k.stock_ids for k in years]
    seg_len = [k.lengths for k in years]
    cal = [k.calendar for k in years]
    del years
    if not days_l:
        raise PanelContractError(f"panel {panel_dir} has no rows")
    # Each year is sorted by (stock, date) and the years follow in time, so (stock, date) order
    # is the years' runs of each stock taken stock by stock, year by year: a sort of the
    # (stock, year) runs (thousands), not of the rows (millions).
    s_sid, s_len = np.concatenate(seg_sid), np.concatenate(seg_len)
    s_year = np.repeat(np.arange(len(seg_sid)), [len(x) for x in seg_sid])
    s_start = np.cumsum(s_len) - s_len
    o = np.lexsort((s_year, s_sid))
    order = windows.ranges(s_start[o], s_start[o] + s_len[o])
    s_sid, s_len = s_sid[o], s_len[o]
    new_stock = np.r_[True, s_sid[1:] != s_sid[:-1]]
    stock_ids = s_sid[new_stock].astype(np.int32)
    offsets = np.r_[(np.cumsum(s_len) - s_len)[new_stock], s_len.sum()].astype(np.int64)
    cols = []
    for parts in (days_l, rets, caps):  # one column at a time bounds the peak memory
        col = np.concatenate(parts)
        parts.clear()
        cols.append(col[order])
        del col
    calendar = windows.days_to_ns(np.concatenate(cal))
    return PanelKeys(stock_ids, offsets, cols[0], cols[1], cols[2], calendar)


# --------------------------------------------------------------------------------------------------
# Plan


@dataclass
class PartTask:
    """One (year, shard) unit of work; picklable and small (the keys of its windows only).

    The part draws the windows of its shard that have enough history and writes the images into
    its own slice of the year's array ``year_file``: slots ``first_slot ..
    first_slot + len(sid) - 1`` of a ``.npy`` pre-sized for ``year_slots`` images. Images come
    first in the slice, in window order; a window the renderer rejects leaves the slice's last
    slot(s) unused (the merge then closes the gap).
    """

    panel_dir: str
    part_stem: str  # .../_parts/<year>/shard_<k>; the marker is <part_stem>.json
    year_file: str  # .../_parts/images_<year>.npy, shared by the year's parts
    year_slots: int  # images the year file has room for (every window of the year drawn)
    first_slot: int  # index of this part's first image in the year file
    year: int
    shard: int
    window: int  # bars drawn (the image size)
    ma: bool
    volume: bool
    stock_ids: np.ndarray  # int32 (k,), sorted: the shard's stocks
    read_years: list[int]  # panel years holding every block's rows
    sid: np.ndarray  # int32 (n,) stock of each window to draw, (stock_id, date) order
    day: np.ndarray  # int64 (n,) image date of each window, days since the epoch
    start_day: np.ndarray  # int64 (n,) day of each window's oldest block row
    n_hist: np.ndarray  # int64 (n,) real records of each window's block (W*bar_days..2W*bar_days)
    r0: int  # R0 rejections of these stocks in this year
    r1: int  # R1 rejections (fewer than W bars of history), decided by the plan
    settings_hash: str
    bar_days: int = 1  # trading days per bar (METHOD 11); n_hist and the blocks count days


@dataclass
class Plan:
    """The tasks, R0 counts per year, the years, and the label rows.

    labels: LABEL_TABLE_COLUMNS of every window with a record on its date (panel ``rows``, int64,
    in panel order), or None until computed (plan_labels); task_rows[i]: int64
    (len(tasks[i].sid),) rows of ``labels`` for task i's windows, in order.
    """

    tasks: list[PartTask]
    r0_by_year: dict[int, int]
    years: list[int]
    labels: pd.DataFrame | None
    task_rows: list[np.ndarray]
    rows: np.ndarray


def plan_image_set(keys: PanelKeys, panel_dir: str | Path, parts_dir: Path, window: int,
                   freq: str, start_year: int, end_year: int, mode: str, stocks_per_shard: int,
                   ma: bool, volume: bool, settings_hash: str, bar_days: int = 1,
                   with_labels: bool = True) -> Plan:
    """Candidates, R0/R1 counts, labels and (year, shard) tasks of one image set (``window`` bars
    of ``bar_days`` days: the history, and so the rejections and labels, are those of the
    ``window * bar_days``-day daily set). ``with_labels=False`` leaves ``Plan.labels`` None, for
    the caller to fill with :func:`plan_labels` (the tasks do not need it)."""
    if stocks_per_shard < 1:
        raise InputError(f"images.stocks_per_shard must be >= 1, got {stocks_per_shard}")
    days = keys.days
    pe = windows.period_ends(keys.calendar, freq)
    pe_years = pe.astype("datetime64[Y]").astype(np.int64) + 1970
    pe = pe[(pe_years >= start_year) & (pe_years <= end_year)]
    pe_days = windows.to_days(pe)
    rk = windows.row_keys(days, keys.offsets)
    cands = windows.find_candidates(days, keys.offsets, pe_days, rk)
    cand_year = pe.astype("datetime64[Y]").astype(np.int64)[cands.pe_index] + 1970
    have = cands.row >= 0
    rows = cands.row[have]
    stock_idx = cands.stock_index[have]
    n_hist = windows.history_lengths(rows, keys.offsets[stock_idx], window * bar_days)
    # R1 here rather than in render_windows (same rule: fewer than W bars, a bar being
    # aggregate_bars' complete bar of bar_days records): the plan then knows how many images every
    # task can make, and so where each task's images go in the year's array, before any drawing.
    short = n_hist // bar_days < window
    table = (labels_mod.label_table(keys.stock_ids, keys.offsets, days, keys.ret, keys.mktcap,
                                    keys.calendar, rows, mode, rk) if with_labels else None)
    block_start = days[rows - n_hist + 1]
    block_start_year = (block_start.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64)
                        + 1970)
    img_year = cand_year[have]
    r0_year = cand_year[~have]
    r0_stock = cands.stock_index[~have]
    years = list(range(start_year, end_year + 1))
    r0_by_year = {y: int((r0_year == y).sum()) for y in years}
    tasks: list[PartTask] = []
    task_rows: list[np.ndarray] = []
    for y in years:  # a loop over years and shards only; the data work inside is vectorised
        in_y = np.flatnonzero(img_year == y)
        r0_y = r0_stock[r0_year == y]
        stocks_y = np.unique(np.r_[stock_idx[in_y], r0_y])
        year_file = str(parts_dir / f"images_{y}.npy")
        year_slots = int((~short[in_y]).sum())
        slot = 0
        for k in range(0, len(stocks_y), stocks_per_shard):
            shard_stocks = stocks_y[k:k + stocks_per_shard]
            sel = in_y[np.isin(stock_idx[in_y], shard_stocks)]
            draw = sel[~short[sel]]
            first_year = int(block_start_year[draw].min()) if len(draw) else y
            tasks.append(PartTask(
                panel_dir=str(panel_dir),
                part_stem=str(parts_dir / str(y) / f"shard_{k // stocks_per_shard:04d}"),
                year_file=year_file, year_slots=year_slots, first_slot=slot,
                year=y, shard=k // stocks_per_shard, window=window, ma=ma, volume=volume,
                stock_ids=keys.stock_ids[shard_stocks].astype(np.int32),
                read_years=list(range(first_year, y + 1)),
                sid=keys.stock_ids[stock_idx[draw]].astype(np.int32), day=days[rows[draw]],
                start_day=block_start[draw],
                n_hist=n_hist[draw],
                r0=int(np.isin(r0_y, shard_stocks).sum()), r1=int(len(sel) - len(draw)),
                settings_hash=settings_hash, bar_days=bar_days,
            ))
            task_rows.append(draw)
            slot += len(draw)
    return Plan(tasks, r0_by_year, years, table, task_rows, rows)


def plan_labels(keys: PanelKeys, plan: Plan, mode: str) -> pd.DataFrame:
    """The label table of a plan made with ``with_labels=False`` (its ``labels``)."""
    return labels_mod.label_table(keys.stock_ids, keys.offsets, keys.days, keys.ret, keys.mktcap,
                                  keys.calendar, plan.rows, mode)


# --------------------------------------------------------------------------------------------------
# Tasks: chains of (year, shard) parts


def _row_groups_holding(meta: pq.FileMetaData, ids: np.ndarray) -> list[int]:
    """Row groups of a panel file whose stock_id statistics range holds one of ``ids`` (sorted);
    a group without statistics is always included."""
    col = meta.schema.names.index("stock_id")
    out = []
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(col).statistics
        if (st is None or not st.has_min_max
                or np.searchsorted(ids, st.min, "left") < np.searchsorted(ids, st.max, "right")):
            out.append(g)
    return out


def _rows_from(sid: np.ndarray, day: np.ndarray, ids: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Positions of the rows of stocks ``ids`` dated ``start`` or later, int64, in row order.

    sid, day (N,): rows sorted by (stock_id, day); ids (k,) sorted unique stock ids; start (k,)
    each one's first day wanted (days since the epoch).
    """
    if not len(sid) or not len(ids):
        return np.zeros(0, dtype=np.int64)
    # A composite (stock, day) key increases strictly along the rows: one search finds each
    # stock's first wanted row, another the end of its rows.
    d0 = int(min(day.min(), start.min()))
    span = int(max(day.max(), start.max())) - d0 + 1
    first = np.searchsorted(windows.composite_keys(sid, day, d0, span),
                            windows.composite_keys(ids, start, d0, span))
    return windows.ranges(first, np.searchsorted(sid, ids, "right"))


Rows = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(stock ids int32 (N,), days int64 (N,) since the epoch, values float64 (N, 6) RENDER_COLUMNS),
sorted by (stock_id, day)."""


def _no_rows() -> Rows:
    return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((0, len(windows.RENDER_COLUMNS)))


def _read_year_rows(f: Path, ids: np.ndarray, start: np.ndarray) -> Rows:
    """The rows of one panel year file for stocks ``ids`` (sorted) from their ``start`` day on.

    Only the row groups holding these stocks are decoded (the panel is written in row groups of a
    few hundred stocks), and only the needed columns; rows are picked with numpy, without
    pyarrow's dataset filters or pandas.
    """
    cols = ["stock_id", "date", *windows.RENDER_COLUMNS]
    if not f.exists():
        return _no_rows()
    pf = pq.ParquetFile(f)
    groups = _row_groups_holding(pf.metadata, ids)
    if not groups:
        return _no_rows()
    # use_threads=False: parallelism comes from the executor's processes; pyarrow's own thread
    # pool would only oversubscribe the cores.
    t = pf.read_row_groups(groups, columns=cols, use_threads=False)
    sid = t.column("stock_id").to_numpy()
    day = windows.to_days(t.column("date").to_numpy())
    take = _rows_from(sid, day, ids, start)
    if len(take) and take[-1] - take[0] + 1 == len(take):
        t = t.slice(int(take[0]), len(take))  # one run of rows: no copy before to_numpy
    else:
        t = t.take(take)
    v = np.stack([t.column(c).to_numpy() for c in windows.RENDER_COLUMNS], axis=1,
                 dtype=np.float64)
    bad = v[:, :4] <= 0  # open, high, low, close (NaN compares False)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise PanelContractError(
            f"{f}: non-positive {windows.RENDER_COLUMNS[j]} (stock_id={sid[take[i]]}, "
            f"date={np.datetime64(int(day[take[i]]), 'D')}); missing prices must be NaN")
    return sid[take].astype(np.int32), day[take], v


def _year_needs(task: PartTask) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{panel year: (stock ids (k,) sorted, first day wanted (k,))}: the rows ``task``'s blocks
    use, by year file (a year before the image year only for the stocks whose blocks reach it)."""
    if not len(task.sid):
        return {}
    ids, off = windows.stock_offsets(task.sid)  # task.sid is sorted
    start = np.minimum.reduceat(task.start_day, off[:-1])  # each stock's oldest block day
    out = {}
    for y in task.read_years:
        here = start < int(np.datetime64(f"{y + 1}-01-01", "D").astype(np.int64))
        if here.any():
            out[y] = (ids[here], start[here])
    return out


def _union_needs(needs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Union of several (ids, first day) needs of one year: each stock once, its earliest day."""
    ids = np.concatenate([n[0] for n in needs])
    start = np.concatenate([n[1] for n in needs])
    order = np.lexsort((start, ids))
    ids, start = ids[order], start[order]
    first = np.r_[True, ids[1:] != ids[:-1]]
    return ids[first], start[first]


def _concat_years(parts: list[Rows]) -> Rows:
    """Rows of consecutive years (each sorted by (stock, day)) merged into (stock, day) order."""
    if not parts:
        return _no_rows()
    if len(parts) == 1:
        return parts[0]
    sid = np.concatenate([p[0] for p in parts])
    order = np.argsort(sid, kind="stable")  # years in order, each (stock, date)-sorted
    return (sid[order], np.concatenate([p[1] for p in parts])[order],
            np.concatenate([p[2] for p in parts])[order])


def _task_counts(status: np.ndarray) -> dict[int, int]:
    codes, n = np.unique(status[status >= 0], return_counts=True)
    return {int(c): int(k) for c, k in zip(codes, n)}


def npy_header(n: int, shape: tuple[int, int]) -> bytes:
    """The ``.npy`` (format 1.0) header of a C-order uint8 array (n, *shape): the bytes np.save
    writes before the data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (int(n), *shape)})
    return buf.getvalue()


class _SliceWriter:
    """Writes a part's images into its slice of the year file, chunk by chunk as they are drawn.

    Every part of the year opens the same file (created by whichever comes first) and sizes it to
    ``n_slots`` images without truncating it: each writes the same header and only its own byte
    range, so parts may run in any order, concurrently, or again after an interruption. The file
    is opened at the first write (a part whose windows are all rejected never touches it).
    """

    def __init__(self, path: Path, n_slots: int, shape: tuple[int, int], first_slot: int) -> None:
        self.path, self.n_slots, self.shape, self.slot = path, n_slots, shape, first_slot
        self.fd: int | None = None

    def write(self, images: np.ndarray) -> None:
        """Append uint8 (m, H, 3W) images after those already written by this part."""
        if not len(images):
            return
        img_bytes = int(np.prod(self.shape))
        if self.fd is None:
            header = npy_header(self.n_slots, self.shape)
            self.header_len = len(header)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666)
            size = len(header) + self.n_slots * img_bytes
            if os.fstat(self.fd).st_size != size:
                os.ftruncate(self.fd, size)  # sparse: unwritten slots take no disk
            os.pwrite(self.fd, header, 0)
        data = memoryview(np.ascontiguousarray(images, dtype=np.uint8)).cast("B")
        pos, start = 0, self.header_len + self.slot * img_bytes
        while pos < len(data):  # one call writes at most about 2 GiB on Linux
            pos += os.pwrite(self.fd, data[pos:pos + (1 << 30)], start + pos)
        self.slot += len(images)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _done_info(task: PartTask) -> dict | None:
    """The part's marker if it is done with these settings, else None."""
    marker = Path(task.part_stem).with_suffix(".json")
    if marker.exists():
        info = read_json(marker)
        if info.get("hash") == task.settings_hash:
            return info
    return None


def run_part(task: PartTask) -> dict:
    """Run one (year, shard) part alone (:func:`run_parts` of a one-part chain)."""
    return run_parts([task])[0]


def run_parts(tasks: list[PartTask]) -> list[dict]:
    """Render a chain of (year, shard) parts, skipping those already done; results in order.

    Each part writes its images into its slice of its year file and then its marker
    ``<part_stem>.json`` {"hash", "year", "shard", "n_images", "rejections": {code: count},
    "rejected": [positions in the part's windows the renderer rejected]}, which is also what it
    returns. A chain holds parts of one shard index in consecutive years: each panel year file is
    decoded once for all of them (the rows of year y serve the part of year y and the history of
    the part of year y + 1) and dropped once no later part needs it.
    """
    infos: list[dict | None] = [_done_info(t) for t in tasks]
    todo = [i for i, info in enumerate(infos) if info is None]
    needs = {i: _year_needs(tasks[i]) for i in todo}
    by_year: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    last_use: dict[int, int] = {}
    for i in todo:
        for y, need in needs[i].items():
            by_year.setdefault(y, []).append(need)
            last_use[y] = i
    cache: dict[int, Rows] = {}
    for i in todo:
        t = tasks[i]
        parts = []
        for y, (ids, start) in needs[i].items():
            if y not in cache:
                cache[y] = _read_year_rows(Path(t.panel_dir) / f"year={y}" / "part.parquet",
                                           *_union_needs(by_year[y]))
            if y == t.year:  # a superset of the part's rows will do: blocks are located in it
                parts.append(cache[y])
                continue
            sid, day, values = cache[y]
            take = _rows_from(sid, day, ids, start)
            parts.append(cache[y] if len(take) == len(sid)
                         else (sid[take], day[take], values[take]))
        for y in [y for y in cache if last_use[y] <= i]:
            del cache[y]
        infos[i] = _render_part(t, _concat_years(parts))
    return infos  # type: ignore[return-value]


def _render_part(task: PartTask, rows: Rows) -> dict:
    """Draw one part's windows from its blocks' rows, write its slice and marker (see run_parts)."""
    from pipeline.images.aggregate import aggregate_bars
    from pipeline.images.render import render_windows

    stem = Path(task.part_stem)
    n = len(task.sid)
    shape = IMAGE_SHAPES[task.window]  # the renderer's shape with or without volume
    status = np.full(n, -1, dtype=np.int8)
    if n:  # a shard may hold only R0/R1 rejections in this year: nothing to read then
        sid, day, values = rows
        ids, offsets = windows.stock_offsets(sid)
        q_sid, q_day = task.sid, task.day
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
        out = _SliceWriter(Path(task.year_file), task.year_slots, shape, task.first_slot)
        try:
            for a in range(0, n, RENDER_CHUNK):
                b = min(n, a + RENDER_CHUNK)
                n_h = task.n_hist[a:b]
                block = windows.gather_blocks(values, pos_c[a:b], n_h, task.window * task.bar_days)
                if task.bar_days > 1:
                    block, n_h = aggregate_bars(block, n_h, task.bar_days)
                images, status[a:b] = render_windows(block, n_h, task.window, ma=task.ma,
                                                     volume=task.volume)
                drawn = status[a:b] == -1
                # Straight from the renderer's array into the file: no copy of the part's images.
                out.write(images if drawn.all() else images[drawn])
        finally:
            out.close()
    ok = status == -1
    n_ok = int(ok.sum())
    counts = _task_counts(status)
    for code, v in ((windows.R0_CODE, task.r0), (windows.R1_CODE, task.r1)):
        if v:
            counts[code] = v
    info = {"hash": task.settings_hash, "year": task.year, "shard": task.shard,
            "n_images": n_ok, "rejections": {str(c): v for c, v in counts.items()},
            "rejected": np.flatnonzero(~ok).tolist()}
    write_json(stem.with_suffix(".json"), info)  # last: the part is done
    return info


def chains(tasks: list[PartTask], n_chains: int) -> list[list[int]]:
    """Group the parts into about ``n_chains`` chains (lists of task indices) for the executor.

    A chain holds the parts of one shard index in consecutive years, so each panel year is decoded
    once for the part of that year and the history of the next one; more chains than workers keep
    the pool balanced. Grouping only decides which process draws what: the artifacts are the same
    for any grouping (each part writes its own slice and marker).
    """
    runs: dict[int, list[int]] = {}
    for i in sorted(range(len(tasks)), key=lambda i: (tasks[i].shard, tasks[i].year)):
        runs.setdefault(tasks[i].shard, []).append(i)
    years = max(1, -(-len(tasks) // max(1, n_chains)))  # parts per chain, rounded up
    return [r[a:a + years] for r in runs.values() for a in range(0, len(r), years)]


# --------------------------------------------------------------------------------------------------
# Merge and the whole set


def _prepare_parts(parts_dir: Path, plan: Plan, settings_hash: str) -> None:
    """Make ``parts_dir`` hold only what this build can resume from.

    Parts of a build with other settings (or of an older layout: no ``settings.json``) are
    removed; the markers of a year whose file is missing or not of the planned size (a merge that
    moved it away, a damaged file) are removed, so that year's parts are redone.
    """
    stamp = parts_dir / "settings.json"
    if parts_dir.exists() and (not stamp.exists() or read_json(stamp).get("hash") != settings_hash):
        shutil.rmtree(parts_dir)
    if not stamp.exists():
        write_json(stamp, {"hash": settings_hash})
    for y in plan.years:
        tasks = [t for t in plan.tasks if t.year == y]
        if not tasks or not tasks[0].year_slots:
            continue
        f = Path(tasks[0].year_file)
        shape = IMAGE_SHAPES[tasks[0].window]
        slots = tasks[0].year_slots
        size = len(npy_header(slots, shape)) + slots * int(np.prod(shape))
        if f.exists() and f.stat().st_size == size:
            continue
        f.unlink(missing_ok=True)
        for t in tasks:
            Path(t.part_stem).with_suffix(".json").unlink(missing_ok=True)


def _merge_year(out_dir: Path, plan: Plan, year: int, results: list[dict],
                shape: tuple[int, int]) -> int:
    """Move the year's array into place and write its label table; returns the image count.

    ``results``: the markers of the year's parts, in shard order. Where no window was rejected by
    the renderer the parts filled every slot, and the file is renamed into place (no copy);
    otherwise the images are copied behind a header of the true count, each part's images being
    one contiguous run at the start of its slice (kernel copy_file_range).
    """
    idx = [i for i, t in enumerate(plan.tasks) if t.year == year]
    if not idx:
        return 0
    tasks = [plan.tasks[i] for i in idx]
    ok = []
    for t, r in zip(tasks, results):
        m = np.ones(len(t.sid), dtype=bool)
        m[np.asarray(r["rejected"], dtype=np.int64)] = False
        if int(m.sum()) != r["n_images"]:
            raise RuntimeError(f"{t.part_stem}.json: n_images {r['n_images']} does not match "
                               f"{len(r['rejected'])} rejected of {len(t.sid)}; delete "
                               f"{out_dir / '_parts'} and rebuild")
        ok.append(m)
    ok_all = np.concatenate(ok)
    n = int(ok_all.sum())
    year_file = Path(tasks[0].year_file)
    if n == 0:
        year_file.unlink(missing_ok=True)
        return 0
    img_bytes = int(np.prod(shape))
    slots = tasks[0].year_slots
    header = npy_header(slots, shape)
    size = len(header) + slots * img_bytes
    if year_file.stat().st_size != size:
        raise RuntimeError(f"{year_file}: {year_file.stat().st_size} bytes, expected {size}; "
                           "delete the image set and rebuild it")
    target = out_dir / f"images_{year}.npy"
    if n == slots:
        os.replace(year_file, target)
    else:
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as dst:
                dst.write(npy_header(n, shape))
                for t, r in zip(tasks, results):
                    if r["n_images"]:
                        _append_file_bytes(dst, year_file, len(header) + t.first_slot * img_bytes,
                                           r["n_images"] * img_bytes)
        year_file.unlink()
    rows = np.concatenate([plan.task_rows[i] for i in idx])[ok_all]
    lab = plan.labels.iloc[rows].reset_index(drop=True)
    key = lab["stock_id"].to_numpy().astype(np.int64), windows.to_days(lab["date"].to_numpy())
    ds, dd = np.diff(key[0]), np.diff(key[1])
    if len(lab) > 1 and not ((ds > 0) | ((ds == 0) & (dd > 0))).all():
        raise RuntimeError(f"year {year}: label rows are not sorted by (stock_id, date)")
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
                          bar_days=spec.bar_days, with_labels=False)
    log.info("%s: %d candidate images in %d tasks, %d R0", image_set,
             sum(len(t.sid) + t.r1 for t in plan.tasks), len(plan.tasks),
             sum(plan.r0_by_year.values()))
    t1 = time.perf_counter()
    _prepare_parts(parts_dir, plan, h)
    # The label table and the provenance record are needed only by the merge: a thread of this process makes them while the executor draws, instead of before or
    # after it (numpy and pandas release the GIL in their kernels; the pool's workers are other
    # processes).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-labels") as side:
        labels_job = side.submit(plan_labels, keys, plan, im.period_ret_mode)
        provenance_job = side.submit(provenance_record, image_set, panel_dir)
        del keys
        try:
            results = _run_chains(executor, plan, image_set)
        except BaseException:
            side.shutdown(wait=False, cancel_futures=True)  # a failed build waits for no record
            raise
        plan.labels = labels_job.result()
        record = provenance_job.result()
    t2 = time.perf_counter()
    names = reason_names()
    rejections: dict[str, dict[str, int]] = {}
    total = 0
    shape = IMAGE_SHAPES[w]
    written = set()
    for y in plan.years:
        res_y = [r for t, r in zip(plan.tasks, results) if t.year == y]
        counts = {name: 0 for name in names.values()}
        for r in res_y:
            for c, v in r["rejections"].items():
                counts[names[int(c)]] += v
        rejections[str(y)] = counts
        n = _merge_year(out_dir, plan, y, res_y, shape)
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
    write_json(out_dir / "provenance.json", record)
    t3 = time.perf_counter()
    timing = {"plan_s": round(t1 - t0, 2), "render_s": round(t2 - t1, 2),
              "merge_s": round(t3 - t2, 2)}
    mark_done(out_dir, h, image_set=image_set, built_from="panel", n_images=total,
              n_rejected=int(sum(sum(v.values()) for v in rejections.values())), **timing)
    shutil.rmtree(parts_dir, ignore_errors=True)
    log.info("%s: %d images in %.1f s (%s)", image_set, total, t3 - t0, timing)
    return out_dir


def _run_chains(executor: Executor, plan: Plan, image_set: str) -> list[dict]:
    """Run every part of the plan on the executor; their results (markers) in plan.tasks order.

    Parts go in chains (:func:`chains`): one per shard index in-process, else about four per
    worker; an executor that does not say how many workers it has (a Dask cluster) gets one chain
    per part. Largest chains first: the pool's tail is then made of small ones (better balance).
    """
    workers = getattr(executor, "workers", None)
    n_chains = 1 if workers == 1 else 4 * workers if workers else len(plan.tasks)
    groups = sorted(chains(plan.tasks, n_chains),
                    key=lambda c: -sum(len(plan.tasks[i].sid) for i in c))
    done = executor.map(run_parts, [[plan.tasks[i] for i in c] for c in groups],
                        desc=f"images {image_set}")
    results: list[dict] = [{}] * len(plan.tasks)
    for c, rs in zip(groups, done):
        for i, r in zip(c, rs):
            results[i] = r
    return results


def provenance_record(image_set: str, panel_dir: Path) -> dict:
    """The content of a built set's ``provenance.json``: ``stage`` ("images"), ``image_set``,
    ``inputs`` (the panel folder, resolved, and its marker hash) and
    :func:`pipeline.provenance.provenance` (commit, package versions, machine). Not part of the settings
    hash: it says how the set was made, not what it depends on, so a rerun with the same settings
    still skips."""
    from pipeline.provenance import provenance

    marker = marker_path(panel_dir)
    return {"stage": "images", "image_set": image_set,
            "inputs": {"panel": str(panel_dir.resolve()),
                       "panel_hash": read_json(marker).get("hash") if marker.exists() else None},
            **provenance()}


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
