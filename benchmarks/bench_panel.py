"""Benchmark: the shared 11.6M-row Stooq extract -> canonical panel on disk.

``python -m benchmarks.bench_panel [--parquet PATH]`` (``make bench-panel``) times the whole
stage as a user runs it (read, clean, returns, market-cap proxy, year-partitioned write) into a
temporary folder that is deleted afterwards, and prints rows, seconds, rows/s, CPU seconds and the
peak resident memory of the process (``resource.getrusage``). On a shared machine the wall time
depends on the load; the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "stooq-us-daily-1992-2019.parquet"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parquet", type=Path, default=DEFAULT, help=f"extract (default {DEFAULT})")
    args = p.parse_args(argv)
    if not args.parquet.exists():
        print(f"bench-panel: {args.parquet} not found (the shared data lives in ../shared/data)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    from pipeline.config import load_config
    from pipeline.panel.build import make_panel
    from pipeline.panel.store import read_meta

    with tempfile.TemporaryDirectory(prefix="bench_panel_") as tmp:
        cfg = load_config(None, ["name=bench", f"data_dir={tmp}", "panel.source=stooq",
                                 f"panel.path={args.parquet}"])
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        out = make_panel(cfg, force=True)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        meta = read_meta(out)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    n_in = meta.counts["input_rows"]
    print(f"bench-panel: {args.parquet.name}")
    print(f"  input rows       {n_in:>14,}")
    print(f"  panel rows       {meta.n_rows:>14,}  ({meta.n_stocks:,} stocks, {size / 2**20:,.0f} MiB)")
    print(f"  wall seconds     {seconds:>14.2f}")
    print(f"  cpu seconds      {cpu:>14.2f}  ({os.cpu_count()} cores; load 1-min "
          f"{os.getloadavg()[0]:.1f})")
    print(f"  rows/s (input)   {n_in / seconds:>14,.0f}")
    print(f"  peak RSS         {peak_mb:>11,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
