"""Generic OHLCV adapter (``panel.source: generic``; docs/method.md 4.7): any market, any calendar.

Two layouts, told apart by the ``generic.columns.ticker`` setting:

* **one file per instrument** (``columns.ticker`` unset): ``panel.path`` is a folder searched
  recursively for ``generic.pattern`` (default ``*.csv``; ``*.parquet`` files are read as Parquet),
  or one file. The ticker is the file name without its suffix, or the first group of
  ``generic.ticker_pattern`` matched in the file name (Binance's monthly kline files
  ``BTCUSDT-1d-2021-01.csv``: ``^([A-Z0-9]+)-``); files of one ticker are concatenated.
* **one long file** (``columns.ticker`` names a column): every row carries its instrument; a folder
  of such files is read file after file.

Columns are found by the names in ``generic.columns`` (case-insensitive; other columns are ignored),
or, for files without a header line (Binance's klines), by ``generic.header``, the names of all
columns in file order. Dates: ``generic.date_format`` (ISO or YYYYMMDD text, or epoch seconds /
milliseconds / microseconds in UTC); a time of day other than midnight is refused, since the panel
is daily (intraday bars must be aggregated to days first). Cells ``""``, ``null``, ``NaN`` are
missing values.

No share-code or exchange filter and no weekend rule: every date in the files is kept (a 24/7
exchange has Saturday and Sunday bars), and the config refuses CRSP's filters and the US ticker-suffix
rule for this source. There are no shares outstanding, so ``mktcap`` is the dollar-volume proxy of
METHOD 3.5 (pipeline.panel.mktcap), stated in the panel's meta. Rows then go through
:func:`~pipeline.panel.clean.clean_free` like Stooq's (repeated (ticker, date): ``duplicate_rows``,
the last one kept; OHLC repairs, zero volume, first record and range rules all counted).
Errors name the file, the line (text: header = line 1, or line 1 = first data line without a
header) or row (Parquet: first data row = row 1) and the column.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import GenericConfig, PanelConfig
from pipeline.panel.clean import (
    NS_PER_DAY,
    Column,
    FreeRaw,
    FreeRawBuilder,
    PanelInputError,
    check_not_negative,
    clean_free,
    input_error,
    parse_dates,
    read_header,
    read_text_table,
    reading,
    sniff_text,
)
from pipeline.progress import progress

log = logging.getLogger(__name__)

NA = ("", "null", "NaN", "nan")
PRICE_FIELDS = ("open", "high", "low", "close", "volume")
# Nanoseconds per unit of the epoch formats.
EPOCH_NS = {"unix_s": 10**9, "unix_ms": 10**6, "unix_us": 10**3}


def generic_files(path: Path, g: GenericConfig) -> list[Path]:
    """The files to read, sorted by path (the order that decides which duplicate is "last")."""
    if not path.exists():
        raise FileNotFoundError(f"panel.path {path} (resolved: {path.resolve()}) does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob(g.pattern) if p.is_file())
    if not files:
        raise input_error(path, "folder", None, f"no files match generic.pattern {g.pattern!r}")
    return files


def ticker_from_name(path: Path, g: GenericConfig) -> str:
    """The instrument of a one-instrument file: ``generic.ticker_pattern``'s group, else the stem."""
    if g.ticker_pattern is None:
        name = path.name
        for suffix in (".parquet", ".csv", ".txt"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return name.strip().upper()
    m = re.search(g.ticker_pattern, path.name)
    if m is None or not m.group(1):
        raise input_error(path, "file name", None, f"generic.ticker_pattern {g.ticker_pattern!r} "
                          "does not match it: no ticker")
    return m.group(1).strip().upper()


def _wanted(g: GenericConfig) -> dict[str, str]:
    """Field (date, open, ..., ticker) -> its configured column name."""
    return {k: v for k, v in asdict(g.columns).items() if v is not None}


# --------------------------------------------------------------------------------------------------
# Text files


def _columns(g: GenericConfig) -> list[Column]:
    """read_text_table column specs: epoch dates read as numbers and converted afterwards."""
    names = _wanted(g)
    date_kind = ("float", NA, "iso") if g.date_format in EPOCH_NS else ("date", (), g.date_format)
    cols = [Column(names["date"], date_kind[0], date_kind[1], date_kind[2])]
    cols += [Column(names[f], "float", NA) for f in PRICE_FIELDS]
    if "ticker" in names:
        cols.append(Column(names["ticker"], "str"))
    return cols


def _read_headerless(path: Path, g: GenericConfig) -> pd.DataFrame | None:
    """A file without a header line, its columns named by ``generic.header`` (line 1 = row 0)."""
    sniff_text(path)
    with reading(path):
        header = list(g.header or [])
        if path.stat().st_size == 0:
            return None
        specs = {c.name.lower(): c for c in _columns(g)}
        names = {h.lower(): h for h in header}
        dtype = {names[k]: ("float64" if c.kind == "float" else "string") for k, c in specs.items()}
        try:
            raw = pd.read_csv(path, header=None, names=header, usecols=list(dtype), dtype=dtype,
                              na_values={n: list(NA) for n in dtype}, keep_default_na=False,
                              skip_blank_lines=False, encoding="utf-8-sig", index_col=False)
        except (ValueError, TypeError, pd.errors.ParserError) as e:
            raise _diagnose_headerless(path, header, specs, names) or input_error(
                path, "(unknown line)", None, f"cannot parse: {e}") from None
        if raw.empty:
            return None
        return _typed(path, raw, specs, names, first_line=1)


def _diagnose_headerless(path: Path, header: list[str], specs: dict[str, Column],
                         names: dict[str, str]):
    """The first bad line of a header-less file as an error (slow pass, only after a failure)."""
    pos = {k: [h.lower() for h in header].index(k) for k in specs}
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not f.strip() for f in row):
                return input_error(path, f"line {line_no}", None, "empty line")
            if len(row) != len(header):
                return input_error(path, f"line {line_no}", None, f"{len(row)} fields, but "
                                   f"generic.header names {len(header)}")
            for k, c in specs.items():
                v = row[pos[k]]
                if c.kind == "float" and v not in c.na:
                    try:
                        float(v)
                    except ValueError:
                        return input_error(path, f"line {line_no}", names[k], f"{v!r} is not a number")
    return None


def _typed(path: Path, raw: pd.DataFrame, specs: dict[str, Column], names: dict[str, str],
           first_line: int) -> pd.DataFrame:
    """Checked float / date / str columns of a header-less read (keys: configured names)."""
    out = {}
    for k, c in specs.items():
        s = raw[names[k]]
        if c.kind == "float":
            x = s.to_numpy(dtype=np.float64)
            if np.isinf(x).any():
                i = int(np.flatnonzero(np.isinf(x))[0])
                raise input_error(path, f"line {i + first_line}", names[k], "not a finite number")
            out[c.name] = x
        elif c.kind == "date":
            if s.isna().any():
                i = int(np.flatnonzero(s.isna().to_numpy())[0])
                raise input_error(path, f"line {i + first_line}", names[k], "empty value")
            d, bad = parse_dates(s, c.date_format)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise input_error(path, f"line {i + first_line}", names[k],
                                  _bad_date(str(s.iat[i]), c.date_format))
            out[c.name] = d
        else:
            out[c.name] = s
    return pd.DataFrame(out)


def _bad_date(value: str, fmt: str) -> str:
    """Why a date cell was refused: a time of day (not daily data) or not a date at all."""
    ts = pd.to_datetime(pd.Series([value]), format="ISO8601", errors="coerce").iat[0]
    if not pd.isna(ts) and ts != ts.normalize():
        return (f"{value!r} has a time of day: the generic source reads daily bars only "
                "(aggregate intraday data to days first)")
    return f"{value!r} is not a valid date (generic.date_format {fmt})"


def _read_text(path: Path, g: GenericConfig) -> tuple[pd.DataFrame, int, dict[str, str]] | None:
    """One CSV -> (frame keyed by configured column names, line number of its first data row,
    configured name -> the file's spelling of it, for messages)."""
    if g.header is not None:
        t = _read_headerless(path, g)
        spelled = {h.lower(): h for h in g.header}
        return None if t is None else (t, 1, {v: spelled[v.lower()] for v in _wanted(g).values()})
    header = read_header(path)
    if header is None:
        return None
    have = {h.lower() for h in header}
    spelled = {h.lower(): h for h in header}
    missing = [f"{v} (generic.columns.{k})" for k, v in _wanted(g).items() if v.lower() not in have]
    if missing:
        raise input_error(path, "line 1", None, f"missing column(s) {missing}; the header has "
                          f"{header}")
    try:
        t = read_text_table(path, _columns(g))
    except PanelInputError as e:  # a refused date: say so when it is a time of day
        msg = str(e)
        m = re.search(r"line (\d+), column '([^']+)': '([^']*)' is not a valid date", msg)
        if m is None:
            raise
        raise input_error(path, f"line {m.group(1)}", m.group(2),
                          _bad_date(m.group(3), g.date_format)) from None
    return None if t is None else (t, 2, {v: spelled[v.lower()] for v in _wanted(g).values()})


# --------------------------------------------------------------------------------------------------
# Parquet files


def _parquet_float(path: Path, table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise input_error(path, "all rows", name, f"type {col.type}, expected numbers")
    x = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN: missing
    if np.isinf(x).any():
        i = int(np.flatnonzero(np.isinf(x))[0])
        raise input_error(path, f"row {i + 1}", name, f"{x[i]!r} is not a finite number")
    return x


def _read_parquet(path: Path, g: GenericConfig) -> tuple[pd.DataFrame, int, dict[str, str]] | None:
    with reading(path):
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise input_error(path, "file", None, f"not a readable Parquet file: {e}") from None
        have = {n.lower(): n for n in schema.names}
        wanted = _wanted(g)
        missing = [f"{v} (generic.columns.{k})" for k, v in wanted.items() if v.lower() not in have]
        if missing:
            raise input_error(path, "schema", None, f"missing column(s) {missing}; it has "
                              f"{schema.names}")
        table = pq.read_table(path, columns=[have[v.lower()] for v in wanted.values()])
    if table.num_rows == 0:
        return None
    names = {k: have[v.lower()] for k, v in wanted.items()}
    out: dict[str, object] = {}
    dcol = table.column(names["date"])
    if dcol.null_count:
        i = int(np.flatnonzero(dcol.is_null().to_numpy(zero_copy_only=False))[0])
        raise input_error(path, f"row {i + 1}", names["date"], "missing value")
    if pa.types.is_timestamp(dcol.type) or pa.types.is_date(dcol.type):
        if pa.types.is_timestamp(dcol.type) and dcol.type.tz is not None:
            dcol = dcol.cast(pa.timestamp(dcol.type.unit))  # wall time in UTC
        date = dcol.to_numpy().astype("datetime64[ns]")
        bad = date.view(np.int64) % NS_PER_DAY != 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise input_error(path, f"row {i + 1}", names["date"], _bad_date(str(date[i]), "timestamp"))
        out[wanted["date"]] = date
    elif g.date_format in EPOCH_NS:
        out[wanted["date"]] = _parquet_float(path, table, names["date"])
    else:
        fmt = g.date_format
        s = dcol.to_pandas()
        d, bad = parse_dates(s, fmt)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise input_error(path, f"row {i + 1}", names["date"], _bad_date(str(s.iat[i]), fmt))
        out[wanted["date"]] = d
    for f in PRICE_FIELDS:
        out[wanted[f]] = _parquet_float(path, table, names[f])
    if "ticker" in names:
        tcol = table.column(names["ticker"])
        out[wanted["ticker"]] = pd.array(tcol.to_pandas().astype("string"), dtype="string")
    return pd.DataFrame(out), 1, {wanted[k]: v for k, v in names.items()}


# --------------------------------------------------------------------------------------------------
# Both


def _epoch_to_days(path: Path, x: np.ndarray, g: GenericConfig, column: str, loc) -> np.ndarray:
    """Epoch numbers (n,) in generic.date_format's unit -> datetime64[ns]; midnight UTC only."""
    bad = np.isnan(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, loc(i), column, "empty value")
    unit = EPOCH_NS[g.date_format]
    ns = np.rint(x * unit).astype(np.int64)
    frac = (x != np.floor(x)) | (ns % NS_PER_DAY != 0)
    if frac.any():
        i = int(np.flatnonzero(frac)[0])
        when = pd.Timestamp(int(ns[i]), unit="ns")
        raise input_error(path, loc(i), column,
                          f"{x[i]:.0f} ({g.date_format}) is {when} UTC, not midnight: the generic "
                          "source reads daily bars only (aggregate intraday data to days first)")
    return ns.view("datetime64[ns]")


def read_generic(path: Path, g: GenericConfig, exchange: str,
                 counts: dict[str, int]) -> tuple[FreeRaw, str]:
    """Every generic file under ``path`` -> (FreeRaw, layout description). Counts files read and
    empty files (0 bytes, blank or header only)."""
    files = generic_files(path, g)
    wanted = _wanted(g)
    b = FreeRawBuilder()
    n_empty = n_read = 0
    for f in progress(files, desc="generic files", unit="file", disable=len(files) < 200):
        got = _read_parquet(f, g) if f.suffix.lower() == ".parquet" else _read_text(f, g)
        if got is None:
            n_empty += 1
            continue
        t, first, spelled = got
        n_read += 1
        loc = (lambda i, first=first: f"row {i + 1}") if f.suffix.lower() == ".parquet" else \
            (lambda i, first=first: f"line {i + first}")
        date = t[wanted["date"]].to_numpy()
        if g.date_format in EPOCH_NS and not np.issubdtype(date.dtype, np.datetime64):
            date = _epoch_to_days(f, date.astype(np.float64), g, spelled[wanted["date"]], loc)
        px = {k: t[wanted[k]].to_numpy(dtype=np.float64) for k in PRICE_FIELDS}
        check_not_negative(f, loc, {spelled[wanted[k]]: px[k] for k in ("open", "high", "low", "volume")})
        o, h, l, c, v = (px[k] for k in PRICE_FIELDS)
        if "ticker" not in wanted:
            b.add(ticker_from_name(f, g), exchange, date, o, h, l, c, v)
            continue
        tick = t[wanted["ticker"]].astype("string").str.strip().str.upper()
        empty = (tick.isna() | (tick == "")).to_numpy(dtype=bool)
        if empty.any():
            raise input_error(f, loc(int(np.flatnonzero(empty)[0])), spelled[wanted["ticker"]],
                              "empty ticker")
        codes, uniques = pd.factorize(tick)
        # Rows grouped by ticker, input order kept within each (it decides the "last" duplicate).
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        for k, name in enumerate(uniques):
            rows = order[bounds[k]:bounds[k + 1]]
            b.add(str(name), exchange, date[rows], o[rows], h[rows], l[rows], c[rows], v[rows])
    counts["files_read"] = n_read
    counts["empty_files"] = n_empty
    layout = ("one long file" if path.is_file() else "long files") if "ticker" in wanted else \
        ("one instrument file" if path.is_file() else "one file per instrument")
    return b.build(), layout


def build_generic(cfg: PanelConfig, g: GenericConfig, path: Path
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int], str]:
    """Generic source -> (canonical panel, stocks, counts, layout): every calendar day kept."""
    counts: dict[str, int] = {}
    raw, layout = read_generic(path, g, g.exchange, counts)
    log.info("read %s as generic OHLCV (%s)", path, layout)
    df, stocks, counts = clean_free(raw, cfg, "generic", counts, drop_weekends=False)
    return df, stocks, counts, layout
