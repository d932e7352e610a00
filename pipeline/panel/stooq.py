"""Stooq adapters (docs/method.md 4.2, 4.3): three layouts of the same data, detected from the path.

* ``bulk``: Stooq's bulk download, a folder searched recursively for ``*.txt`` with the header
  ``<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>`` (DATE YYYYMMDD,
  PER ``D``); the exchange comes from the folder name (``nyse stocks`` -> NYSE, ``nasdaq stocks``
  -> NASDAQ, ``nysemkt stocks`` -> AMEX); files under ``* etfs`` folders are skipped (counted);
  empty files are skipped (counted).
* ``kaggle``: the Kaggle "Huge Stock Market Dataset", per-ticker ``<ticker>.us.txt`` with header
  ``Date,Open,High,Low,Close,Volume,OpenInt`` (ISO dates; it has weekend rows). Only ``Stocks/``
  is read, ``ETFs/`` skipped (counted). No exchange information: ``UNKNOWN``.
* ``parquet``: one Parquet table with ``ticker`` (e.g. ``IBM.US``), ``date``, ``open``, ``high``,
  ``low``, ``close``, ``vol``, ``exch`` (the bulk folder name), e.g. the shared
  ``stooq-us-daily-1992-2019.parquet``.

All three become a :class:`~pipeline.panel.clean.FreeRaw` and go through the same
:func:`~pipeline.panel.clean.clean_free`. StockID is the ticker without ``.US``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.progress import progress
from pipeline.config import PanelConfig
from pipeline.panel.clean import (
    reading,
    NS_PER_DAY,
    UNKNOWN_EXCHANGE,
    Column,
    FreeRaw,
    FreeRawBuilder,
    check_not_negative,
    clean_free,
    input_error,
    normalise_ticker,
    parse_dates,
    read_header,
    read_text_table,
    source_files,
)

log = logging.getLogger(__name__)

BULK_HEADER = ["<TICKER>", "<PER>", "<DATE>", "<TIME>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>",
               "<VOL>", "<OPENINT>"]
KAGGLE_HEADER = ["Date", "Open", "High", "Low", "Close", "Volume", "OpenInt"]
YAHOO_HEADER = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
EXCHANGE_FOLDERS = {"nyse stocks": "NYSE", "nasdaq stocks": "NASDAQ", "nysemkt stocks": "AMEX"}

BULK_COLUMNS = [Column("<TICKER>", "str"), Column("<PER>", "str"),
                Column("<DATE>", "date", date_format="yyyymmdd"),
                Column("<OPEN>", "float"), Column("<HIGH>", "float"), Column("<LOW>", "float"),
                Column("<CLOSE>", "float"), Column("<VOL>", "float")]
KAGGLE_COLUMNS = [Column("Date", "date", date_format="iso"), Column("Open", "float"),
                  Column("High", "float"), Column("Low", "float"), Column("Close", "float"),
                  Column("Volume", "float")]
PARQUET_COLUMNS = ["ticker", "date", "open", "high", "low", "close", "vol", "exch"]


def _same_header(header: list[str] | None, expected: list[str]) -> bool:
    return header is not None and [h.lower() for h in header] == [e.lower() for e in expected]


def _text_files(path: Path) -> list[Path]:
    """``[path]`` for a file, else the ``*.txt`` files under the folder (recursive, sorted by path)."""
    return source_files(path, ".txt", "expected Stooq's bulk layout or the Kaggle Stocks/ folder")


def _read_layout_file(f: Path, layout: str, expected: list[str], columns: list[Column],
                      counts: dict[str, int]) -> pd.DataFrame | None:
    """One text file of a Stooq layout -> its ``columns`` (None for an empty file), counted in
    ``counts["files_read"]`` or ``counts["empty_files"]``. A header other than ``expected``
    (case-insensitive) is an error naming the file and line 1."""
    header = read_header(f)
    if header is not None and not _same_header(header, expected):
        raise input_error(f, "line 1", None, f"header {header} is not {layout}'s {expected}")
    t = read_text_table(f, columns)
    counts["empty_files" if t is None else "files_read"] += 1
    return t


def detect_layout(path: Path) -> str:
    """``parquet``, ``bulk`` or ``kaggle`` from the path (file vs folder) and the first header."""
    if path.is_file() and path.suffix.lower() == ".parquet":
        return "parquet"
    for f in _text_files(path):
        header = read_header(f)
        if header is None:
            continue
        if _same_header(header, BULK_HEADER):
            return "bulk"
        if _same_header(header, KAGGLE_HEADER):
            return "kaggle"
        hint = " (a Yahoo CSV: set panel.source: yahoo)" if _same_header(header, YAHOO_HEADER) else ""
        raise input_error(f, "line 1", None, f"header {header} is neither Stooq's {BULK_HEADER} "
                          f"nor Kaggle's {KAGGLE_HEADER}{hint}")
    raise input_error(path, "folder", None, "every *.txt file is empty")


def _exchange_from_path(path: Path) -> str | None:
    """Exchange from a Stooq folder name; None for an ETF folder (skipped)."""
    for part in reversed(path.parent.parts):
        p = part.lower()
        if p in EXCHANGE_FOLDERS:
            return EXCHANGE_FOLDERS[p]
        if p.endswith(" etfs") or p == "etfs":
            return None
    return UNKNOWN_EXCHANGE


def read_bulk(folder: Path, counts: dict[str, int]) -> FreeRaw:
    """Stooq bulk folder (or one bulk file) -> FreeRaw. Counts files read / empty / ETF-skipped."""
    files = _text_files(folder)
    b = FreeRawBuilder()
    counts.update(files_read=0, empty_files=0, etf_files_skipped=0)
    for f in progress(files, desc="stooq files", unit="file", disable=len(files) < 200):
        exch = _exchange_from_path(f)
        if exch is None:
            counts["etf_files_skipped"] += 1
            continue
        t = _read_layout_file(f, "Stooq", BULK_HEADER, BULK_COLUMNS, counts)
        if t is None:
            continue
        tick = t["<TICKER>"].to_numpy(dtype=object)
        odd = np.flatnonzero(tick != tick[0])
        if odd.size:
            raise input_error(f, f"line {odd[0] + 2}", "<TICKER>",
                              f"ticker {tick[odd[0]]!r} differs from {tick[0]!r} on line 2")
        per = t["<PER>"].to_numpy(dtype=object)
        notd = np.flatnonzero(per != "D")
        if notd.size:
            raise input_error(f, f"line {notd[0] + 2}", "<PER>",
                              f"period {per[notd[0]]!r}: only daily ('D') data can make the panel")
        o, h, l, c, v = (t[k].to_numpy() for k in ("<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<VOL>"))
        check_not_negative(f, lambda i: f"line {i + 2}",
                           {"<OPEN>": o, "<HIGH>": h, "<LOW>": l, "<VOL>": v})
        b.add(normalise_ticker(str(tick[0])), exch, t["<DATE>"].to_numpy(), o, h, l, c, v)
    return b.build()


def _kaggle_files(folder: Path) -> tuple[list[Path], int]:
    """Files of Kaggle's ``Stocks/`` (all files if there is no such folder) and the ETF count."""
    files = _text_files(folder)
    keep, etf = [], 0
    has_stocks = any("stocks" in (p.lower() for p in f.relative_to(folder).parts[:-1])
                     for f in files) if folder.is_dir() else False
    for f in files:
        parts = [p.lower() for p in (f.relative_to(folder).parts[:-1] if folder.is_dir() else ())]
        if "etfs" in parts:
            etf += 1
        elif not has_stocks or "stocks" in parts:
            keep.append(f)
    return keep, etf


def read_kaggle(folder: Path, counts: dict[str, int]) -> FreeRaw:
    """Kaggle "Huge Stock Market Dataset" (Stocks/ only) -> FreeRaw; ticker from the file name."""
    files, n_etf = _kaggle_files(folder)
    b = FreeRawBuilder()
    counts.update(files_read=0, empty_files=0, etf_files_skipped=n_etf)
    for f in progress(files, desc="kaggle files", unit="file", disable=len(files) < 200):
        t = _read_layout_file(f, "Kaggle", KAGGLE_HEADER, KAGGLE_COLUMNS, counts)
        if t is None:
            continue
        o, h, l, c, v = (t[k].to_numpy() for k in ("Open", "High", "Low", "Close", "Volume"))
        check_not_negative(f, lambda i: f"line {i + 2}", {"Open": o, "High": h, "Low": l, "Volume": v})
        ticker = normalise_ticker(f.name[: -len(".txt")] if f.name.lower().endswith(".txt") else f.stem)
        b.add(ticker, UNKNOWN_EXCHANGE, t["Date"].to_numpy(), o, h, l, c, v)
    return b.build()


def _float_column(path: Path, table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise input_error(path, "all rows", name, f"type {col.type}, expected numbers")
    x = col.to_numpy().astype(np.float64)
    if col.null_count:
        i = int(np.flatnonzero(np.isnan(x))[0])
        raise input_error(path, f"row {i + 1}", name, "missing value")
    if not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x))[0])
        raise input_error(path, f"row {i + 1}", name, f"{x[i]!r} is not a finite number")
    return x


def _categorical(path: Path, table: pa.Table, name: str) -> tuple[np.ndarray, list[str]]:
    """A string column as (codes int (n,), categories); nulls are errors."""
    col = table.column(name)
    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise input_error(path, f"row {i + 1}", name, "missing value")
    cat = pd.Categorical(col.to_pandas())
    return cat.codes.astype(np.int32), [str(c) for c in cat.categories]


def read_parquet_extract(path: Path, counts: dict[str, int]) -> FreeRaw:
    """The single-table Stooq extract -> FreeRaw (float32 prices widened to float64)."""
    with reading(path):
        return _read_parquet_extract(path, counts)


def _read_parquet_extract(path: Path, counts: dict[str, int]) -> FreeRaw:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise input_error(path, "file", None, f"not a readable Parquet file: {e}") from None
    have = {n.lower(): n for n in schema.names}
    missing = [c for c in PARQUET_COLUMNS if c not in have]
    if missing:
        raise input_error(path, "schema", None, f"missing column(s) {missing}; it has {schema.names}")
    table = pq.read_table(path, columns=[have[c] for c in PARQUET_COLUMNS])
    table = table.rename_columns(PARQUET_COLUMNS)
    tcodes, tcats = _categorical(path, table, "ticker")
    ecodes, ecats = _categorical(path, table, "exch")
    dcol = table.column("date")
    if dcol.null_count:
        i = int(np.flatnonzero(dcol.is_null().to_numpy(zero_copy_only=False))[0])
        raise input_error(path, f"row {i + 1}", "date", "missing value")
    if pa.types.is_timestamp(dcol.type) or pa.types.is_date(dcol.type):
        date = dcol.to_numpy().astype("datetime64[ns]")
        bad = date.view(np.int64) % NS_PER_DAY != 0  # a time of day: not daily data
    else:
        date, bad = parse_dates(dcol.to_pandas(), "auto")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, f"row {i + 1}", "date", f"{dcol[i]} is not a valid trading day")
    o, h, l, c, v = (_float_column(path, table, k) for k in ("open", "high", "low", "close", "vol"))
    del table
    check_not_negative(path, lambda i: f"row {i + 1}", {"open": o, "high": h, "low": l, "vol": v})
    # Map categories to normalised tickers / exchanges; duplicates after normalising merge.
    tnames = [normalise_ticker(t) for t in tcats]
    tuniq = list(dict.fromkeys(tnames))
    tmap = np.array(pd.Index(tuniq).get_indexer(tnames), dtype=np.int32)
    enames = [EXCHANGE_FOLDERS.get(e.lower(), e) for e in ecats]
    euniq = list(dict.fromkeys(enames))
    emap = np.array(pd.Index(euniq).get_indexer(enames), dtype=np.int16)
    counts["files_read"] = 1
    return FreeRaw(ticker=tmap[tcodes] if len(tmap) else tcodes, tickers=tuniq,
                   exchange=emap[ecodes] if len(emap) else ecodes.astype(np.int16),
                   exchanges=euniq, date=date, open=o, high=h, low=l, close=c, volume=v)


def read_stooq(path: Path, counts: dict[str, int]) -> tuple[FreeRaw, str]:
    """Any Stooq layout -> (FreeRaw, layout name)."""
    layout = detect_layout(path)
    log.info("reading %s as the Stooq %s layout", path, layout)
    if layout == "parquet":
        return read_parquet_extract(path, counts), layout
    if layout == "bulk":
        return read_bulk(path, counts), layout
    return read_kaggle(path, counts), layout


def build_stooq(cfg: PanelConfig, path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int], str]:
    """Stooq source -> (canonical panel, stocks, counts, layout)."""
    counts: dict[str, int] = {}
    raw, layout = read_stooq(path, counts)
    source = "kaggle" if layout == "kaggle" else "stooq"
    df, stocks, counts = clean_free(raw, cfg, source, counts)
    return df, stocks, counts, layout
