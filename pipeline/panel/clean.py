"""Validation and cleaning shared by every panel adapter (docs/method.md 2.7, 3.5, 4.1-4.6).

Two halves:

* **Reading and validation** (all adapters): :class:`PanelInputError`, the one error type for raw
  input that cannot be read as the declared source; its message always names the file, the 1-based
  line (text files, header = line 1) or row (Parquet, first data row = row 1) and the column.
  :func:`read_text_table` reads one delimited text file with typed fast parsing and, only when that
  fails, a slow line-by-line pass that pinpoints the first bad cell; :func:`source_files` lists a
  free source's files. Raw inputs are only ever read.
* **Free-data cleaning** (Stooq, Kaggle, Yahoo): :class:`FreeRaw` holds the rows as read;
  :func:`clean_free` applies METHOD 4.6 rule by rule, counts every row each rule drops, repairs or
  masks, computes close-to-close returns over consecutive valid records and the market-cap proxy of
  METHOD 3.5, and returns the canonical panel (``pipeline.panel.store``).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.errors import InputError
from pipeline.config import PanelConfig
from pipeline.panel.mktcap import dollar_volume_proxy, proxy_min_periods, segment_starts

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 10**9
UNKNOWN_EXCHANGE = "UNKNOWN"


class PanelInputError(InputError):
    """Raw input that cannot be read as the declared source.

    The message names the file, the 1-based line (text) or row (Parquet) and the column.
    """


_NUMPY_REPR = re.compile(r"np\.(?:float|int|uint|bool_?|str_)\d*\(([^()]*)\)")


def input_error(file: str | Path, where: str, column: str | None, message: str) -> PanelInputError:
    """``<file>: <where>, column '<column>': <message>`` (``where`` like ``line 7`` or ``row 3``).

    Values that reached the message as numpy reprs (``np.float64(-126.36)``) are shown as the
    plain numbers a user typed."""
    col = f", column {column!r}" if column else ""
    return PanelInputError(_NUMPY_REPR.sub(r"\1", f"{file}: {where}{col}: {message}"))


_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
         b"\xfe\xff": "UTF-16"}
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz",
               b"\x28\xb5\x2f\xfd": "zstd"}


def sniff_text(path: Path, compressed_ok: bool = False) -> None:
    """PanelInputError when a file read as UTF-8 text is another encoding or compressed (a wrong
    header would otherwise be reported). ``compressed_ok``: the reader decompresses by suffix."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    for bom, name in _BOMS.items():
        if head.startswith(bom):
            raise input_error(path, "file", None, f"{name} text: save it as UTF-8 (or plain ASCII)")
    for magic, name in _COMPRESSED.items():
        if head.startswith(magic) and not compressed_ok:
            raise input_error(path, "file", None, f"{name}-compressed: decompress it first")


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn every way a raw file can fail to be read into a PanelInputError that names it (the
    project's own errors and a missing file pass through)."""
    try:
        yield
    except (PanelInputError, FileNotFoundError):
        raise
    except IsADirectoryError:
        raise input_error(path, "file", None, "is a folder, not a file: give the file itself") from None
    except PermissionError:
        raise input_error(path, "file", None, "cannot be read: permission denied") from None
    except UnicodeDecodeError as e:
        raise input_error(path, f"byte {e.start}", None, f"not UTF-8 text ({e.reason}): save it as "
                          "UTF-8") from None
    except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
        raise input_error(path, "file", None, f"cannot be read ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------------------------------
# Counting


def format_counts(counts: dict[str, int], title: str = "panel cleaning counts") -> str:
    """The counts as an aligned two-column text table (rule, count), in insertion order."""
    if not counts:
        return f"{title}: (none)"
    width = max(len(k) for k in counts)
    lines = [f"{title}:"] + [f"  {k:<{width}}  {v:>12,}" for k, v in counts.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Dates


def yyyymmdd_to_datetime(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integers ``YYYYMMDD`` (n,) -> (datetime64[ns] (n,), bad (n,) bool); bad rows hold NaT.

    Vectorised calendar check: a value is bad unless 1 <= month <= 12 and 1 <= day <= days in that
    month (leap years included) and 1678 <= year <= 2261 (the datetime64[ns] range).
    """
    v = np.asarray(values, dtype=np.int64)
    y, m, d = v // 10_000, (v // 100) % 100, v % 100
    ok = (y >= 1678) & (y <= 2261) & (m >= 1) & (m <= 12) & (d >= 1) & (v >= 0)
    ys, ms = np.where(ok, y, 1970), np.where(ok, m, 1)
    month0 = ((ys - 1970) * 12 + (ms - 1)).astype("datetime64[M]")
    first = month0.astype("datetime64[D]")
    days_in_month = ((month0 + 1).astype("datetime64[D]") - first).astype(np.int64)
    ok &= d <= days_in_month
    out = (first + np.where(ok, d - 1, 0).astype("timedelta64[D]")).astype("datetime64[ns]")
    out[~ok] = np.datetime64("NaT")
    return out, ~ok


def parse_dates(values: pd.Series, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """Date cells -> (datetime64[ns] (n,), bad (n,) bool).

    ``fmt``: ``"yyyymmdd"`` (integers or 8-digit strings), ``"iso"`` (``YYYY-MM-DD``) or ``"auto"``
    (either, per cell: CRSP exports use both). A datetime column passes through. Times of day are
    refused (bad): every source here is daily.
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        out = values.to_numpy().astype("datetime64[ns]")
        bad = np.isnat(out)
    elif fmt == "yyyymmdd" and pd.api.types.is_integer_dtype(values.dtype):
        out, bad = yyyymmdd_to_datetime(values.to_numpy())
    else:
        s = values.astype("string")
        if fmt == "yyyymmdd":
            digits = s.str.fullmatch(r"\d{8}").fillna(False).to_numpy(dtype=bool)
            ints = pd.to_numeric(s.where(digits, "0"), errors="coerce").fillna(0).to_numpy(np.int64)
            out, bad = yyyymmdd_to_datetime(ints)
            bad |= ~digits
            out[bad] = np.datetime64("NaT")
        else:
            fm = "%Y-%m-%d" if fmt == "iso" else "ISO8601"
            parsed = pd.to_datetime(s, format=fm, errors="coerce")
            out = parsed.to_numpy().astype("datetime64[ns]")
            bad = np.isnat(out)
    ok = ~bad
    if ok.any():
        # Daily data only: a time of day means this is not the declared (daily) source.
        intraday = np.zeros_like(bad)
        intraday[ok] = out[ok].astype(np.int64) % NS_PER_DAY != 0
        bad |= intraday
    return out, bad


# --------------------------------------------------------------------------------------------------
# Reading delimited text


@dataclass(frozen=True)
class Column:
    """One required column of a text source.

    kind: ``float`` (numbers; ``na`` tokens give NaN), ``date`` (``date_format``), ``str``.
    """

    name: str
    kind: str
    na: tuple[str, ...] = ()
    date_format: str = "iso"


def source_files(path: Path, suffix: str, expected: str) -> list[Path]:
    """The files a free source reads from ``panel.path``: ``[path]`` for a file, else every file
    under the folder (recursive) whose name ends in ``suffix`` (given in lower case, e.g. ``.txt``;
    names match in any case), sorted by path: the order that decides which duplicate is "last".

    FileNotFoundError for a missing path; PanelInputError naming the folder when it holds no such
    file (``expected`` says what the source wanted there)."""
    if not path.exists():
        raise FileNotFoundError(f"panel.path {path} (resolved: {path.resolve()}) does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(suffix))
    if not files:
        raise input_error(path, "folder", None, f"no *{suffix} files found ({expected})")
    return files


def read_header(path: Path) -> list[str] | None:
    """Column names on line 1 (BOM and surrounding spaces stripped); None for an empty file."""
    sniff_text(path)
    with reading(path), open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    if not first.strip():
        return None
    return [c.strip() for c in next(csv.reader([first]))]


def match_columns(path: Path, header: list[str], wanted: Sequence[str],
                  case_insensitive: bool = True) -> dict[str, str]:
    """Map each wanted column name to its spelling in ``header``; error names the missing ones."""
    norm = (lambda s: s.lower()) if case_insensitive else (lambda s: s)
    have = {norm(h): h for h in header}
    missing = [w for w in wanted if norm(w) not in have]
    if missing:
        raise input_error(path, "line 1", None,
                          f"missing column(s) {missing}; the header has {header}")
    return {w: have[norm(w)] for w in wanted}


def _cell_problem(value: str, col: Column) -> str | None:
    if col.kind == "str":
        return None
    if value in col.na:
        return None
    if value.strip() == "":
        return "empty value"
    if col.kind == "float":
        try:
            x = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if not math.isfinite(x):
            return f"{value!r} is not a finite number"
        return None
    if col.kind == "date":
        _, bad = parse_dates(pd.Series([value.strip()]), col.date_format)
        return f"{value!r} is not a valid date ({col.date_format})" if bad[0] else None
    raise AssertionError(col.kind)  # pragma: no cover


def diagnose_text(path: Path, columns: Sequence[Column], names: dict[str, str]) -> PanelInputError | None:
    """Slow pass over a text file that failed fast parsing: the first bad line, as an error."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [c.strip() for c in next(reader)]
        pos = {c.name: header.index(names[c.name]) for c in columns}
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not f.strip() for f in row):
                return input_error(path, f"line {line_no}", None, "empty line")
            if len(row) != len(header):
                return input_error(path, f"line {line_no}", None,
                                   f"{len(row)} fields, the header has {len(header)}")
            for c in columns:
                problem = _cell_problem(row[pos[c.name]], c)
                if problem:
                    return input_error(path, f"line {line_no}", names[c.name], problem)
    return None


def read_text_table(path: Path, columns: Sequence[Column],
                    case_insensitive: bool = True) -> pd.DataFrame | None:
    """Read the required ``columns`` of one comma-separated file with a header line.

    Returns a frame with exactly the wanted column names (float columns float64, date columns
    datetime64[ns], str columns string), one row per data line (row i = line i + 2), or None for an
    empty file (0 bytes, blank, or header only). Raises :class:`PanelInputError` naming the line
    and column of the first bad cell: a missing column, an empty line, a wrong field count, a
    non-numeric or non-finite number, an unparsable date.
    """
    with reading(path):
        return _read_text_table(path, columns, case_insensitive)


def _read_text_table(path: Path, columns: Sequence[Column], case_insensitive: bool) -> pd.DataFrame | None:
    header = read_header(path)
    if header is None:
        return None
    names = match_columns(path, header, [c.name for c in columns], case_insensitive)
    # YYYYMMDD dates parse fastest as integers; a non-integer cell sends us to the slow pass.
    dtype = {names[c.name]: ("float64" if c.kind == "float" else
                             "int64" if c.kind == "date" and c.date_format == "yyyymmdd" else
                             "string") for c in columns}
    na = {names[c.name]: list(c.na) for c in columns}
    try:
        raw = pd.read_csv(path, usecols=list(dtype), dtype=dtype, na_values=na,
                          keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except (ValueError, TypeError, pd.errors.ParserError) as e:
        err = diagnose_text(path, columns, names)
        raise err or input_error(path, "(unknown line)", None, f"cannot parse: {e}") from None
    if raw.empty:
        return None
    out = {}
    for c in columns:
        s = raw[names[c.name]]
        if c.kind == "float":
            x = s.to_numpy(dtype=np.float64)
            if not np.isfinite(x[~np.isnan(x)]).all():
                i = int(np.flatnonzero(np.isinf(x))[0])
                raise input_error(path, f"line {i + 2}", names[c.name], "not a finite number")
            out[c.name] = x
        elif c.kind == "date":
            if s.isna().any():  # an empty date cell or a blank line: let the slow pass say which
                err = diagnose_text(path, columns, names)
                raise err or input_error(path, f"line {int(np.flatnonzero(s.isna())[0]) + 2}",
                                         names[c.name], "empty value")
            d, bad = parse_dates(s, c.date_format)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise input_error(path, f"line {i + 2}", names[c.name],
                                  f"{s.iat[i]!r} is not a valid date ({c.date_format})")
            out[c.name] = d
        else:
            out[c.name] = s
    return pd.DataFrame(out)


def check_not_negative(file: str | Path, loc: Callable[[int], str], arrays: dict[str, np.ndarray],
                       what: str = "negative value; METHOD 4.6 prescribes no repair") -> None:
    """Raise naming the first row and column holding a negative number (NaN passes)."""
    first: tuple[int, str] | None = None
    for name, x in arrays.items():
        bad = np.flatnonzero(x < 0)
        if bad.size and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), name)
    if first is not None:
        i, name = first
        raise input_error(file, loc(i), name, f"{arrays[name][i]!r}: {what}")


# --------------------------------------------------------------------------------------------------
# Free data: the rows as read


@dataclass
class FreeRaw:
    """Rows of a free source exactly as read, before cleaning; all arrays aligned, length n.

    Input order (files in sorted path order, then line order) decides which duplicate is "last".
    ticker int32 (n,): index into ``tickers`` (normalised: upper case, no ``.US``);
    exchange int16 (n,): index into ``exchanges``; date datetime64[ns] (n,);
    open, high, low, close, volume float64 (n,): raw source units, NaN = missing in the source;
    adj_close float64 (n,) or None: Yahoo's dividend- and split-adjusted close (return basis).
    """

    ticker: np.ndarray
    tickers: list[str]
    exchange: np.ndarray
    exchanges: list[str]
    date: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    adj_close: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.date.shape[0])


@dataclass
class FreeRawBuilder:
    """Accumulates per-file pieces into one :class:`FreeRaw` (ticker and exchange codes shared)."""

    with_adj_close: bool = False
    _tickers: dict[str, int] = field(default_factory=dict)
    _exchanges: dict[str, int] = field(default_factory=dict)
    _pieces: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(self, ticker: str, exchange: str, date: np.ndarray, open_: np.ndarray,
            high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray,
            adj_close: np.ndarray | None = None) -> None:
        n = len(date)
        t = self._tickers.setdefault(ticker, len(self._tickers))
        e = self._exchanges.setdefault(exchange, len(self._exchanges))
        piece = {"ticker": np.full(n, t, np.int32), "exchange": np.full(n, e, np.int16),
                 "date": date, "open": open_, "high": high, "low": low, "close": close,
                 "volume": volume}
        if self.with_adj_close:
            assert adj_close is not None
            piece["adj_close"] = adj_close
        self._pieces.append(piece)

    def build(self) -> FreeRaw:
        keys = ["ticker", "exchange", "date", "open", "high", "low", "close", "volume"]
        if self.with_adj_close:
            keys.append("adj_close")
        empty = {"ticker": np.int32, "exchange": np.int16, "date": "datetime64[ns]"}
        arr = {k: (np.concatenate([p[k] for p in self._pieces]) if self._pieces
                   else np.empty(0, empty.get(k, np.float64))) for k in keys}
        return FreeRaw(ticker=arr["ticker"], tickers=list(self._tickers), exchange=arr["exchange"],
                       exchanges=list(self._exchanges), date=arr["date"].astype("datetime64[ns]"),
                       open=arr["open"], high=arr["high"], low=arr["low"], close=arr["close"],
                       volume=arr["volume"], adj_close=arr.get("adj_close"))


def normalise_ticker(text: str) -> str:
    """``ibm.us`` / ``IBM.US`` / ``IBM`` -> ``IBM`` (Stooq's StockID is the ticker without .US)."""
    t = text.strip().upper()
    return t[:-3] if t.endswith(".US") else t


def is_non_common(ticker: str) -> bool:
    """METHOD 4.6: ``_`` (preferreds ``_a``) or ``-`` (warrants ``-ws``, units ``-u``) marks a
    non-common security. CEFs and ADRs carry no marker and stay in."""
    return "_" in ticker or "-" in ticker


# --------------------------------------------------------------------------------------------------
# Free data: cleaning


def _day(ts: str) -> np.datetime64:
    return np.datetime64(pd.Timestamp(ts).normalize().to_datetime64(), "ns")


def clean_free(raw: FreeRaw, cfg: PanelConfig, source: str,
               counts: dict[str, int] | None = None, drop_weekends: bool = True
               ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """METHOD 4.6 cleaning, close-to-close returns and the METHOD 3.5 proxy, fully vectorised.

    Rules, in this order, each counting the rows it touches (keys of the returned counts):

    1. ``noncommon_tickers`` / ``noncommon_rows``: with ``cfg.common_only``, tickers with ``_``/``-``.
    2. ``after_end``: dates after ``cfg.end`` dropped (they cannot influence earlier rows).
    3. ``weekend_rows``: Saturday/Sunday rows dropped (Kaggle has them); not with
       ``drop_weekends=False`` (the generic source: any calendar, 24/7 markets included; count 0).
    4. sort by (ticker, date), stable; ``duplicate_rows``: same (ticker, date), the last one kept.
    5. ``missing_close`` / ``nonpositive_close`` (and ``*_adj_close`` for Yahoo): dropped before
       returns, so a return always spans two valid closes.
    6. ``zero_open_masked`` / ``zero_high_masked`` / ``zero_low_masked``: zero price = missing
       (METHOD 2.3). Negative O/H/L never get here: adapters refuse them.
    7. OHLC consistency, with diagnostic counts ``high_below_low``, ``open_outside_low_high``,
       ``close_outside_low_high`` (overlapping) and the action count ``ohlc_repaired_rows``
       (``H' = max(O,H,L,C)``, ``L' = min(O,H,L,C)`` over present values; a missing H or L stays
       missing) or, with ``ohlc_errors: mask``, ``ohlc_masked_rows`` (H and L set missing, so the
       renderer skips that day's glyph, METHOD 2.7).
    8. ``zero_volume_masked``: volume 0 -> NaN.
    9. returns ``ret_t = P_t / P_{t-1} - 1`` over consecutive remaining records of the stock, P =
       close (Adj Close for Yahoo); the proxy ``mktcap`` (mktcap.py) over the same records.
    10. ``first_record_no_return``: each stock's first record has no return: dropped (METHOD 2.7).
    11. optional ``abs_ret_above_max`` (|ret| > cfg.max_abs_ret) and ``close_below_min_price``
        (close < cfg.min_price): records dropped after returns, so the next record's return still
        spans two genuine closes.
    12. ``before_start``: dates before ``cfg.start`` dropped last, so the first in-range record keeps
        the return (and proxy history) from earlier data when the source has it.

    ``raw`` is consumed: its arrays are reused (modified in place) or released, to keep one copy of
    an 11-million-row table in memory; do not use it afterwards.

    Returns (panel, stocks, counts): panel in the canonical schema sorted by (stock_id, date);
    stock_id int32 assigned 1..n in sorted ticker order over the tickers left in the panel;
    stocks has stock_id, ticker, exchange (that of the stock's last row). Exchange and source are
    categorical columns (11M Python strings would cost ~1 GB).
    """
    counts = {} if counts is None else counts
    n = len(raw)
    counts["input_rows"] = n
    keep = np.ones(n, dtype=bool)

    def drop(name: str, mask: np.ndarray) -> None:
        counts[name] = int(np.count_nonzero(mask & keep))
        keep[mask] = False

    start, end = _day(cfg.start), _day(cfg.end)
    nc = np.fromiter((is_non_common(t) for t in raw.tickers), dtype=bool, count=len(raw.tickers))
    if cfg.common_only:
        present = np.zeros(len(raw.tickers), bool)
        present[raw.ticker] = True
        counts["noncommon_tickers"] = int(np.count_nonzero(nc & present))
        drop("noncommon_rows", nc[raw.ticker])
    else:
        counts["noncommon_tickers"] = 0
        counts["noncommon_rows"] = 0
    drop("after_end", raw.date > end)
    # 1970-01-01 was a Thursday: (days + 3) % 7 is 0 on Mondays, 5-6 on weekends.
    days = raw.date.view(np.int64) // NS_PER_DAY
    drop("weekend_rows", ((days + 3) % 7 >= 5) if drop_weekends else np.zeros(n, bool))

    # Sort by (ticker in alphabetical order, date); stable so that "last" means last as read.
    order_of_ticker = np.argsort(np.array(raw.tickers, dtype=object), kind="stable")
    rank = np.empty(len(raw.tickers), np.int64)
    rank[order_of_ticker] = np.arange(len(raw.tickers))
    idx: np.ndarray | None = None if keep.all() else np.flatnonzero(keep)
    del keep
    r = rank[raw.ticker] if idx is None else rank[raw.ticker[idx]]
    if idx is not None:
        days = days[idx]
    dmin = int(days.min()) if len(days) else 0
    key = r * (int(days.max()) - dmin + 1 if len(days) else 1) + (days - dmin)
    del days
    if len(key) > 1 and not np.all(key[1:] >= key[:-1]):
        o = np.argsort(key, kind="stable")
        idx = o if idx is None else idx[o]
        key, r = key[o], r[o]
        del o
    dup = np.zeros(len(key), bool)
    dup[:-1] = key[1:] == key[:-1]  # an earlier row of a repeated (ticker, date): superseded
    del key
    counts["duplicate_rows"] = int(np.count_nonzero(dup))
    if dup.any():
        ok = np.flatnonzero(~dup)
        idx = ok if idx is None else idx[ok]
        r = r[ok]
    del dup

    # Gather the surviving rows column by column (or take the arrays as they are when nothing
    # moved), releasing raw's copy at once: peak memory stays near one copy of the table.
    cols = ["exchange", "date", "open", "high", "low", "close", "volume"] + \
        (["adj_close"] if raw.adj_close is not None else [])
    a: dict[str, np.ndarray] = {}
    for c in cols:
        x = getattr(raw, c)
        a[c] = (x if x.flags.writeable else x.copy()) if idx is None else x[idx]
        setattr(raw, c, x[:0])
    raw.ticker = raw.ticker[:0]
    del idx

    k = np.ones(len(r), bool)

    def drop2(name: str, mask: np.ndarray) -> None:
        counts[name] = int(np.count_nonzero(mask & k))
        k[mask] = False

    def compact() -> np.ndarray:
        nonlocal r
        sel = np.flatnonzero(k)
        for c in list(a):
            a[c] = a[c][sel]
        r = r[sel]
        return np.ones(len(sel), bool)

    drop2("missing_close", np.isnan(a["close"]))
    drop2("nonpositive_close", a["close"] <= 0)
    if "adj_close" in a:
        drop2("missing_adj_close", np.isnan(a["adj_close"]))
        drop2("nonpositive_adj_close", a["adj_close"] <= 0)
    if not k.all():
        k = compact()

    o_, h_, l_, c_, v_ = a["open"], a["high"], a["low"], a["close"], a["volume"]
    # Zero price = missing (METHOD 2.3). In place: these arrays belong to this function now.
    for name, x in (("open", o_), ("high", h_), ("low", l_)):
        z = x == 0
        counts[f"zero_{name}_masked"] = int(np.count_nonzero(z))
        x[z] = np.nan
    del z

    counts["high_below_low"] = int(np.count_nonzero(h_ < l_))
    counts["open_outside_low_high"] = int(np.count_nonzero((o_ > h_) | (o_ < l_)))
    counts["close_outside_low_high"] = int(np.count_nonzero((c_ > h_) | (c_ < l_)))
    hi = np.fmax(np.fmax(o_, h_), np.fmax(l_, c_))  # fmax/fmin skip NaN
    lo = np.fmin(np.fmin(o_, h_), np.fmin(l_, c_))
    fix_h = h_ < hi  # NaN compares False: a missing H or L is not an error and stays missing
    fix_l = l_ > lo
    bad = fix_h | fix_l
    if cfg.ohlc_errors == "repair":
        # H' = max(O,H,L,C) equals H wherever H is already the maximum: only H < max changes.
        counts["ohlc_repaired_rows"] = int(np.count_nonzero(bad))
        np.copyto(h_, hi, where=fix_h)
        np.copyto(l_, lo, where=fix_l)
    else:
        counts["ohlc_masked_rows"] = int(np.count_nonzero(bad))
        h_[bad] = np.nan
        l_[bad] = np.nan
    del hi, lo, fix_h, fix_l, bad

    z = v_ == 0
    counts["zero_volume_masked"] = int(np.count_nonzero(z))
    v_[z] = np.nan
    del z

    starts = segment_starts(r)
    p = a.pop("adj_close") if "adj_close" in a else c_
    ret = np.empty(len(p))
    ret[0:1] = np.nan
    np.divide(p[1:], p[:-1], out=ret[1:])
    ret[1:] -= 1.0
    ret[starts] = np.nan  # a stock's first record has no previous close
    del p
    window = cfg.mktcap_proxy_window
    a["mktcap"] = dollar_volume_proxy(c_, v_, starts, window, proxy_min_periods(window))
    a["ret"] = ret
    del o_, h_, l_, c_, v_, starts

    k = np.ones(len(ret), bool)
    drop2("first_record_no_return", np.isnan(ret))
    if cfg.max_abs_ret is not None:
        drop2("abs_ret_above_max", np.abs(ret) > cfg.max_abs_ret)
    if cfg.min_price is not None:
        drop2("close_below_min_price", a["close"] < cfg.min_price)
    drop2("before_start", a["date"] < start)
    del ret
    k = compact()

    # stock_id: 1..n over the remaining tickers in alphabetical order (r is sorted).
    m = len(r)
    new = np.ones(m, bool)
    new[1:] = r[1:] != r[:-1]
    first_rows = np.flatnonzero(new)
    stock_id = np.cumsum(new, dtype=np.int32)
    del new
    last_rows = np.r_[first_rows[1:] - 1, m - 1] if m else np.empty(0, np.int64)
    sorted_tickers = [raw.tickers[i] for i in order_of_ticker]
    exch = a.pop("exchange")
    stocks = pd.DataFrame({
        "stock_id": np.arange(1, len(first_rows) + 1, dtype=np.int32),
        "ticker": pd.array([sorted_tickers[i] for i in r[first_rows]], dtype="string"),
        "exchange": pd.array([raw.exchanges[i] for i in exch[last_rows]], dtype="string"),
    })
    df = pd.DataFrame({
        "stock_id": stock_id,
        "date": a.pop("date"),
        **{c: a.pop(c) for c in ("open", "high", "low", "close", "volume", "ret", "mktcap")},
        "exchange": pd.Categorical.from_codes(exch.astype(np.int32), categories=raw.exchanges)
        if raw.exchanges else pd.Categorical([]),
        "source": pd.Categorical.from_codes(np.zeros(m, np.int8), categories=[source]),
    }, copy=False)
    counts["tickers_in_panel"] = int(len(first_rows))
    counts["output_rows"] = int(m)
    return df, stocks, counts
