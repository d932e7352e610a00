"""Renderer throughput on real windows: ``python -m benchmarks.bench_render`` (``make bench-render``).

Drawing section (owner RENDER): windows of a few hundred tickers of the shared Stooq Parquet, one
window per ticker and calendar month end, rows [open, high, low, close, vol, ret] with ret the
close-to-close return, cleaned the way the panel is (zero prices and zero volumes missing, rows
without a return dropped). It times ``render_windows`` for I5, I20 and I60 (MA + volume, the
baseline) single-process and with all cores (fork workers, each rendering a contiguous slice of the
same windows; only a checksum travels back). The authors' renderer draws about 350-450 images/s.

Structured as small functions (load -> windows -> timings -> table) so a whole-stage section can be
added beside ``bench_drawing``. Timings on a shared machine are noisy: the table gives the best of
``--repeats`` runs, both wall-clock and process CPU time for the single-process case.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.images.render import render_windows

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PARQUET = REPO.parent / "shared" / "data" / "stooq-us-daily-1992-2019.parquet"
PRICE_COLUMNS = ["open", "high", "low", "close"]


def load_stooq_sample(path: Path, n_tickers: int = 300, seed: int = 0) -> pd.DataFrame:
    """A random sample of tickers from the Stooq Parquet, reading only the needed columns.

    Returns one row per (ticker, date), sorted, with float64 columns open, high, low, close,
    volume, ret (close-to-close), after the panel's cleaning: zero prices and zero volumes become
    NaN, prices are made absolute, rows without a return are dropped.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"Stooq Parquet not found at {path} (pass --parquet)")
    tickers = pq.read_table(path, columns=["ticker"])["ticker"].unique().to_pylist()
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(sorted(tickers), size=min(n_tickers, len(tickers)), replace=False))
    table = pq.read_table(path, columns=["ticker", "date", *PRICE_COLUMNS, "vol"],
                          filters=[("ticker", "in", chosen)])
    df = table.to_pandas()
    df["ticker"] = df["ticker"].astype(str)
    df = df.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    for c in PRICE_COLUMNS:
        df[c] = df[c].astype(np.float64).abs().replace(0.0, np.nan)
    df["volume"] = df.pop("vol").astype(np.float64).replace(0.0, np.nan)
    df["ret"] = df.groupby("ticker", sort=False)["close"].pct_change(fill_method=None)
    return df.dropna(subset=["ret"]).reset_index(drop=True)


def month_end_windows(df: pd.DataFrame, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (ticker, month end) window of ``df`` as renderer input.

    Returns rows float64 (n, 2W, 6) [open, high, low, close, volume, ret], front-padded with NaN,
    and n_hist int64 (n,) = real rows (capped at 2W). Month end = the ticker's last record of each
    calendar month. Built with one fancy index, no loop over tickers.
    """
    data = df[[*PRICE_COLUMNS, "volume", "ret"]].to_numpy(np.float64)
    ticker = df["ticker"].to_numpy()
    new_ticker = np.r_[True, ticker[1:] != ticker[:-1]]
    start = np.maximum.accumulate(np.where(new_ticker, np.arange(len(df)), 0))  # first row of the ticker
    month = df["date"].dt.to_period("M").to_numpy()
    last_of_month = np.r_[(month[1:] != month[:-1]) | new_ticker[1:], True]
    ends = np.flatnonzero(last_of_month)
    idx = ends[:, None] - np.arange(2 * window - 1, -1, -1)[None, :]
    real = idx >= start[ends][:, None]
    rows = np.where(real[..., None], data[np.maximum(idx, 0)], np.nan)
    n_hist = real.sum(axis=1).astype(np.int64)
    return rows, n_hist


@dataclass
class Timing:
    label: str
    window: int
    n: int
    images: int  # windows that produced an image
    wall_s: float
    cpu_s: float | None = None

    @property
    def per_s(self) -> float:
        return self.n / self.wall_s


def time_single(rows: np.ndarray, n_hist: np.ndarray, window: int, repeats: int = 3) -> Timing:
    """Best-of-``repeats`` single-process time of one render_windows call over all windows."""
    best_wall = best_cpu = np.inf
    status = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        _, status = render_windows(rows, n_hist, window)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return Timing("1 process", window, len(rows), int((status == -1).sum()), best_wall, best_cpu)


_SHARED: dict = {}  # inherited by forked workers: no pickling of the windows


def _render_slice(bounds: tuple[int, int]) -> tuple[int, int]:
    rows, n_hist, window = _SHARED["rows"], _SHARED["n_hist"], _SHARED["window"]
    images, status = render_windows(rows[bounds[0]:bounds[1]], n_hist[bounds[0]:bounds[1]], window)
    return int((status == -1).sum()), int(images[:, :, 1::3].sum(dtype=np.int64) % 1_000_003)


def time_parallel(rows: np.ndarray, n_hist: np.ndarray, window: int, workers: int,
                  repeats: int = 3, chunk: int = 4096) -> Timing:
    """Best-of-``repeats`` wall time rendering all windows with ``workers`` forked processes.

    The pool is started (and warmed) before timing; each task renders a contiguous slice of about
    ``chunk`` windows and returns only a count and a checksum.
    """
    _SHARED.update(rows=rows, n_hist=n_hist, window=window)
    bounds = [(i, min(i + chunk, len(rows))) for i in range(0, len(rows), chunk)]
    best = np.inf
    drawn = 0
    with mp.get_context("fork").Pool(workers) as pool:
        pool.map(_render_slice, bounds[:workers])  # warm up every worker
        for _ in range(repeats):
            t0 = time.perf_counter()
            results = pool.map(_render_slice, bounds, chunksize=1)
            best = min(best, time.perf_counter() - t0)
            drawn = sum(r[0] for r in results)
    _SHARED.clear()
    return Timing(f"{workers} processes", window, len(rows), drawn, best)


def bench_drawing(parquet: Path, n_tickers: int, windows: list[int], workers: int,
                  repeats: int, max_windows: int | None = None) -> list[Timing]:
    """Drawing throughput for each window length, single-process and with ``workers`` processes."""
    t0 = time.perf_counter()
    df = load_stooq_sample(parquet, n_tickers)
    print(f"loaded {df['ticker'].nunique()} tickers, {len(df):,} rows in {time.perf_counter() - t0:.1f} s")
    out = []
    for w in windows:
        rows, n_hist = month_end_windows(df, w)
        if max_windows is not None and len(rows) > max_windows:
            rows, n_hist = rows[:max_windows], n_hist[:max_windows]
        out.append(time_single(rows, n_hist, w, repeats))
        if workers > 1:
            out.append(time_parallel(rows, n_hist, w, workers, repeats))
    return out


def format_table(timings: list[Timing]) -> str:
    lines = [f"{'image':6} {'mode':13} {'windows':>8} {'drawn':>8} {'wall s':>8} {'images/s':>10} "
             f"{'images/s per CPU-s':>19}"]
    for t in timings:
        cpu = f"{t.n / t.cpu_s:>19,.0f}" if t.cpu_s else f"{'':>19}"
        lines.append(f"I{t.window:<5} {t.label:13} {t.n:>8,} {t.images:>8,} {t.wall_s:>8.3f} "
                     f"{t.per_s:>10,.0f} {cpu}")
    return "\n".join(lines)


def bench_stage(config: str = "stooq_i20r20", image_set: str = "I20/month",
                workers: int | None = None, overrides: list[str] | None = None) -> dict:
    """Whole image stage (owner IMAGES): the panel of ``config`` -> one complete image set.

    Builds ``image_set`` (labels, rejections, merge; no contact sheet) from
    ``paths.panel_dir(cfg)`` into a scratch folder beside the real set (deleted afterwards, so the
    real set is neither reused nor clobbered) and returns {"images", "wall_s", "images_per_s",
    "cpu_s_this_process" (the whole stage's CPU time when workers=1, tasks then run in-process),
    "plan_s", "render_s", "merge_s", "workers"}. The phases are those of ``_DONE.json``: plan
    (panel keys, candidates, slots), render (the parts, with the label table and provenance made
    beside them by a thread), merge (year files into place, label tables). Build the panel first:
    ``python -m pipeline.panel --config stooq_i20r20``.
    """
    import shutil

    from pipeline import paths
    from pipeline.config import load_config
    from pipeline.images.build import build_image_set
    from pipeline.images.executor import LocalExecutor
    from pipeline.io import read_json

    cfg = load_config(config, [*(overrides or []), *([f"images.workers={workers}"] if workers else [])])
    panel = paths.panel_dir(cfg)
    if not (panel / "meta.json").exists():
        raise FileNotFoundError(f"no panel at {panel}: run `python -m pipeline.panel --config {config}`")
    out = paths.images_dir(cfg, image_set).with_name(paths.images_dir(cfg, image_set).name + "_bench")
    shutil.rmtree(out, ignore_errors=True)
    ex = LocalExecutor(cfg.images.workers)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        build_image_set(cfg, image_set, ex, panel_dir=panel, out_dir=out)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        done = read_json(out / "_DONE.json")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"images": done["n_images"], "wall_s": wall, "images_per_s": done["n_images"] / wall,
            "cpu_s_this_process": cpu,
            "plan_s": done.get("plan_s"), "render_s": done.get("render_s"),
            "merge_s": done.get("merge_s"), "workers": ex.workers}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parquet", type=Path, default=DEFAULT_PARQUET)
    p.add_argument("--tickers", type=int, default=300, help="tickers sampled (default 300)")
    p.add_argument("--windows", default="5,20,60", help="image lengths, e.g. 20 or 5,20,60")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for the all-cores timing (default: all cores; 1 = skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-windows", type=int, default=None, help="cap on windows per length")
    p.add_argument("--stage", choices=["auto", "skip", "only"], default="auto",
                   help="whole monthly I20 stage timing: auto = when the panel exists")
    p.add_argument("--config", default="stooq_i20r20", help="config of the stage timing")
    p.add_argument("--stage-workers", type=int, default=None,
                   help="processes for the stage timing (default: --workers; 1 = in-process, "
                        "then the CPU time is the whole stage's)")
    args = p.parse_args(argv)
    if args.stage != "only":
        _drawing_section(args)
    if args.stage != "skip":
        _stage_section(args)


def _stage_section(args: argparse.Namespace) -> None:
    try:
        r = bench_stage(args.config, workers=args.stage_workers or args.workers)
    except FileNotFoundError as e:
        print(f"whole-stage timing skipped: {e}")
        return
    per_core = r["images_per_s"] / r["workers"]
    cpu = (f"; {r['images'] / r['cpu_s_this_process']:,.0f} images per CPU-second"
           if r["workers"] == 1 else "")
    print(f"whole image stage, {args.config} I20/month, {r['workers']} workers: {r['images']:,} "
          f"images in {r['wall_s']:.1f} s = {r['images_per_s']:,.0f} images/s, "
          f"{per_core:,.0f} per core{cpu} "
          f"(plan {r['plan_s']} s, render {r['render_s']} s, merge {r['merge_s']} s; "
          f"CPU of this process {r['cpu_s_this_process']:.1f} s)")


def _drawing_section(args: argparse.Namespace) -> None:
    windows = [int(w) for w in args.windows.split(",")]
    print(f"render_windows drawing throughput (MA + volume), {os.cpu_count()} CPUs visible; "
          f"best of {args.repeats}; the authors' renderer: about 350-450 images/s")
    timings = bench_drawing(args.parquet, args.tickers, windows, args.workers, args.repeats,
                            args.max_windows)
    print(format_table(timings))


if __name__ == "__main__":
    main()
