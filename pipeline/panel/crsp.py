"""CRSP daily stock file adapter (docs/method.md 4.1).

Input: a CSV (optionally compressed) or Parquet export with the WRDS names
``PERMNO, date, OPENPRC, ASKHI, BIDLO, PRC, VOL, RET, SHROUT, EXCHCD, SHRCD`` (any letter case;
dates ``YYYYMMDD`` or ISO; an optional ``TICKER`` column names the stocks in stocks.parquet).

Mapping, rule by rule (counts in brackets):

* rows outside ``panel.start..end`` dropped [``before_start``, ``after_end``];
* ``SHRCD`` not in ``panel.shrcd`` [``shrcd_filtered``], then ``EXCHCD`` not in ``panel.exchcd``
  [``exchcd_filtered``] dropped (missing codes fail the filter; an empty list disables a filter);
* ``PRC < 0`` is a bid/ask midpoint: absolute values of all four prices [``negative_prc_abs``]; a
  negative OPENPRC/ASKHI/BIDLO beside a trade PRC is made absolute too and counted
  [``negative_<col>_abs_with_trade_prc``]; a high below the low is kept (no CRSP repair) and
  counted [``high_below_low_kept``];
  zero prices are missing [``zero_<price>_missing``]; ``VOL`` 0 or -99 is missing
  [``vol_missing``];
* ``RET`` letter codes (A, B, C, D, E, '.'), empty cells and -66/-77/-88/-99 are missing; those
  rows are dropped [``ret_code_<X>``, ``ret_empty``, ``ret_sentinel_<v>``] (METHOD 2.7);
* ``mktcap = |PRC| * SHROUT`` in $ thousands (SHROUT is in thousands), a real market cap;
* ``stock_id = PERMNO``; exchange from ``EXCHCD`` (1 NYSE, 2 AMEX, 3 NASDAQ, else ``EXCHCD=<n>``).

Errors (:class:`~pipeline.panel.clean.PanelInputError`, naming file, line/row, column): missing
columns, unparsable dates, non-numeric cells, negative VOL other than -99, duplicate
(PERMNO, date) rows (METHOD prescribes no repair for CRSP). CRSP OHLC are not "repaired": the
free-data rule of METHOD 4.6 does not apply to CRSP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.config import PanelConfig
from pipeline.panel.clean import (
    reading,
    sniff_text,
    Column,
    diagnose_text,
    input_error,
    match_columns,
    parse_dates,
    read_header,
)

log = logging.getLogger(__name__)

CRSP_COLUMNS = ["PERMNO", "date", "OPENPRC", "ASKHI", "BIDLO", "PRC", "VOL", "RET", "SHROUT",
                "EXCHCD", "SHRCD"]
NUMERIC = ["PERMNO", "OPENPRC", "ASKHI", "BIDLO", "PRC", "VOL", "SHROUT", "EXCHCD", "SHRCD"]
RET_CODES = ("A", "B", "C", "D", "E", ".")
RET_SENTINELS = (-66.0, -77.0, -88.0, -99.0)
EXCHANGES = {1: "NYSE", 2: "AMEX", 3: "NASDAQ"}
PRICE_COLUMNS = {"OPENPRC": "open", "ASKHI": "high", "BIDLO": "low", "PRC": "close"}

# Description for the slow diagnostic pass over a CSV: empty numeric cells are missing (CRSP
# leaves them blank), RET may also hold the letter codes.
_DIAG = [Column("PERMNO", "float"), Column("date", "date", date_format="auto")] + \
    [Column(c, "float", ("",)) for c in NUMERIC if c != "PERMNO"] + \
    [Column("RET", "float", ("",) + RET_CODES)]


def _read_crsp_table(path: Path) -> tuple[pd.DataFrame, Callable[[int], str], str | None]:
    """The export's columns (Parquet or CSV, compressed by suffix), every read failure named."""
    with reading(path):
        return _read_crsp_file(path)


def _read_crsp_file(path: Path) -> tuple[pd.DataFrame, Callable[[int], str], str | None]:
    """Read the required columns (plus TICKER if present) -> (frame, row locator, ticker column).

    The frame has the canonical WRDS names as columns. CSV: typed fast read, on failure a slow
    pass naming the first bad line. Numeric checks per column follow in :func:`_to_float`.
    """
    if not path.exists():
        raise FileNotFoundError(f"panel.path {path} (resolved: {path.resolve()}) does not exist")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as e:
            raise input_error(path, "file", None, f"not a readable Parquet file: {e}") from None
        have = {n.lower(): n for n in names}
        missing = [c for c in CRSP_COLUMNS if c.lower() not in have]
        if missing:
            raise input_error(path, "schema", None, f"missing column(s) {missing}; it has {names}")
        cols = [have[c.lower()] for c in CRSP_COLUMNS]
        tick = have.get("ticker")
        df = pd.read_parquet(path, columns=cols + ([tick] if tick else []))
        df.columns = CRSP_COLUMNS + (["TICKER"] if tick else [])
        return df, (lambda i: f"row {i + 1}"), ("TICKER" if tick else None)
    # Text: the header is read by pandas so that compressed files work too.
    sniff_text(path, compressed_ok=True)
    try:
        header = [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise input_error(path, "line 1", None, f"cannot read a CSV header: {e}") from None
    except pd.errors.EmptyDataError:
        raise input_error(path, "line 1", None, "empty file: no CSV header") from None
    names = match_columns(path, header, CRSP_COLUMNS)
    tick = {h.lower(): h for h in header}.get("ticker")
    dtype = {names[c]: "float64" for c in NUMERIC}
    dtype[names["date"]] = "string"
    dtype[names["RET"]] = "string"
    if tick:
        dtype[tick] = "string"
    na = {names[c]: [""] for c in NUMERIC}
    na[names["RET"]] = [""]
    na[names["date"]] = [""]
    try:
        df = pd.read_csv(path, usecols=list(dtype), dtype=dtype, na_values=na,
                         keep_default_na=False, skip_blank_lines=False)
    except (ValueError, TypeError, pd.errors.ParserError) as e:
        err = None
        if read_header(path) is not None and path.suffix.lower() in (".csv", ".txt"):
            err = diagnose_text(path, _DIAG, names)
        raise err or input_error(path, "(unknown line)", None, f"cannot parse: {e}") from None
    df = df.rename(columns={v: k for k, v in names.items()} | ({tick: "TICKER"} if tick else {}))
    return df, (lambda i: f"line {i + 2}"), ("TICKER" if tick else None)


def _to_float(path: Path, loc: Callable[[int], str], s: pd.Series, name: str,
              allow_missing: bool = True) -> np.ndarray:
    """A numeric or text column -> float64 (n,); non-numbers (or missing, if not allowed) raise."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        x = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        txt = s.astype("string").str.strip()
        num = pd.to_numeric(txt.where(txt != ""), errors="coerce")
        x = num.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(x) & txt.notna().to_numpy() & (txt != "").fillna(False).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise input_error(path, loc(i), name, f"{txt.iat[i]!r} is not a number")
    if np.isinf(x).any():
        i = int(np.flatnonzero(np.isinf(x))[0])
        raise input_error(path, loc(i), name, "not a finite number")
    if not allow_missing and np.isnan(x).any():
        i = int(np.flatnonzero(np.isnan(x))[0])
        raise input_error(path, loc(i), name, "missing value")
    return x


def _integer_codes(path: Path, loc: Callable[[int], str], x: np.ndarray, name: str) -> None:
    frac = ~np.isnan(x) & (x != np.round(x))
    if frac.any():
        i = int(np.flatnonzero(frac)[0])
        raise input_error(path, loc(i), name, f"{x[i]!r} is not an integer code")


def build_crsp(cfg: PanelConfig, path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """CRSP export -> (canonical panel sorted by (PERMNO, date), stocks, counts)."""
    df, loc, tick = _read_crsp_table(path)
    counts: dict[str, int] = {"input_rows": int(len(df))}
    n = len(df)
    permno = _to_float(path, loc, df["PERMNO"], "PERMNO", allow_missing=False)
    _integer_codes(path, loc, permno, "PERMNO")
    if n and (permno.min() < 1 or permno.max() > np.iinfo(np.int32).max):
        i = int(np.flatnonzero((permno < 1) | (permno > np.iinfo(np.int32).max))[0])
        raise input_error(path, loc(i), "PERMNO", f"{permno[i]!r} is not a valid PERMNO")
    ds = df["date"]
    if ds.isna().any():
        i = int(np.flatnonzero(ds.isna().to_numpy())[0])
        raise input_error(path, loc(i), "date", "missing value")
    if pd.api.types.is_integer_dtype(ds.dtype):  # a Parquet export may store YYYYMMDD integers
        date, bad = parse_dates(ds, "yyyymmdd")
    else:
        date, bad = parse_dates(ds if pd.api.types.is_datetime64_any_dtype(ds.dtype)
                                else ds.astype("string"), "auto")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, loc(i), "date", f"{ds.iat[i]!r} is not a valid date "
                          "(YYYYMMDD or YYYY-MM-DD)")
    num = {c: _to_float(path, loc, df[c], c) for c in NUMERIC if c != "PERMNO"}
    for c in ("EXCHCD", "SHRCD"):
        _integer_codes(path, loc, num[c], c)

    # RET: numbers, letter codes, empty cells, sentinels.
    rs = df["RET"]
    if pd.api.types.is_numeric_dtype(rs.dtype):
        ret = rs.to_numpy(dtype=np.float64, na_value=np.nan)
        code_mask = {}
        empty = np.isnan(ret)
    else:
        txt = rs.astype("string").str.strip()
        code_mask = {c: (txt == c).fillna(False).to_numpy(dtype=bool) for c in RET_CODES}
        empty = (txt.isna() | (txt == "")).fillna(True).to_numpy(dtype=bool)
        is_code = np.logical_or.reduce(list(code_mask.values())) | empty
        ret = pd.to_numeric(txt.where(~is_code), errors="coerce").to_numpy(np.float64, na_value=np.nan)
        badr = np.isnan(ret) & ~is_code
        if badr.any():
            i = int(np.flatnonzero(badr)[0])
            raise input_error(path, loc(i), "RET", f"{txt.iat[i]!r} is neither a number nor a "
                              f"CRSP missing code {list(RET_CODES)}")
    if np.isinf(ret).any():
        i = int(np.flatnonzero(np.isinf(ret))[0])
        raise input_error(path, loc(i), "RET", "not a finite number")

    # Duplicate (PERMNO, date): an error, METHOD gives no rule to choose between them.
    dnum = date.astype(np.int64)
    order = np.lexsort((dnum, permno))
    ps, dsrt = permno[order], dnum[order]
    dup = np.flatnonzero((ps[1:] == ps[:-1]) & (dsrt[1:] == dsrt[:-1]))
    if dup.size:
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise input_error(path, loc(b), "PERMNO/date",
                          f"duplicate of {loc(a)} (PERMNO {int(permno[b])}, "
                          f"{pd.Timestamp(date[b]).date()}); CRSP rows must be unique")

    vol = num["VOL"]
    negv = (vol < 0) & (vol != -99)
    if negv.any():
        i = int(np.flatnonzero(negv)[0])
        raise input_error(path, loc(i), "VOL", f"{vol[i]!r}: negative volume other than -99")

    keep = np.ones(n, bool)

    def drop(name: str, mask: np.ndarray) -> None:
        counts[name] = int(np.count_nonzero(mask & keep))
        keep[mask] = False

    start = np.datetime64(pd.Timestamp(cfg.start).normalize().to_datetime64(), "ns")
    end = np.datetime64(pd.Timestamp(cfg.end).normalize().to_datetime64(), "ns")
    drop("before_start", date < start)
    drop("after_end", date > end)
    if cfg.shrcd:
        drop("shrcd_filtered", ~np.isin(num["SHRCD"], np.asarray(cfg.shrcd, dtype=np.float64)))
    if cfg.exchcd:
        drop("exchcd_filtered", ~np.isin(num["EXCHCD"], np.asarray(cfg.exchcd, dtype=np.float64)))
    for c in RET_CODES:
        if c in code_mask:
            drop(f"ret_code_{c}", code_mask[c])
    drop("ret_empty", empty)
    for s in RET_SENTINELS:
        drop(f"ret_sentinel_{int(s)}", ret == s)

    sel = np.flatnonzero(keep)
    o = np.lexsort((dnum[sel], permno[sel]))
    sel = sel[o]
    out: dict[str, np.ndarray] = {}
    counts["negative_prc_abs"] = int(np.count_nonzero(num["PRC"][sel] < 0))
    # A negative OPENPRC/ASKHI/BIDLO on a row whose PRC is a trade (>= 0) is the same CRSP
    # convention (a bid/ask-based value); the absolute value applies to it too, and it is counted.
    prc_trade = ~(num["PRC"][sel] < 0)
    for c in ("OPENPRC", "ASKHI", "BIDLO"):
        counts[f"negative_{c.lower()}_abs_with_trade_prc"] = int(np.count_nonzero(
            (num[c][sel] < 0) & prc_trade))
    for c, canon in PRICE_COLUMNS.items():
        x = np.abs(num[c][sel])
        z = x == 0
        counts[f"zero_{c.lower()}_missing"] = int(np.count_nonzero(z))
        x[z] = np.nan
        out[canon] = x
    # METHOD prescribes no OHLC repair for CRSP: a high below the low is kept as delivered, and
    # counted so that the cleaning table shows it.
    counts["high_below_low_kept"] = int(np.count_nonzero(out["high"] < out["low"]))
    v = vol[sel].copy()
    vm = (v == 0) | (v == -99)
    counts["vol_missing"] = int(np.count_nonzero(vm))
    v[vm] = np.nan
    shrout = num["SHROUT"][sel]
    mktcap = out["close"] * shrout  # $ thousands; NaN when PRC or SHROUT is missing
    exchcd = num["EXCHCD"][sel]
    present = sorted(int(e) for e in np.unique(exchcd[~np.isnan(exchcd)]))
    cats = [EXCHANGES.get(e, f"EXCHCD={e}") for e in present]
    ecode = np.full(len(sel), -1, np.int32)
    for ci, e in enumerate(present):  # a handful of distinct codes, not rows
        ecode[exchcd == e] = ci
    if np.isnan(exchcd).any():  # only possible with the EXCHCD filter disabled
        cats.append("UNKNOWN")
        ecode[np.isnan(exchcd)] = len(cats) - 1
    stock_id = permno[sel].astype(np.int32)
    panel = pd.DataFrame({
        "stock_id": stock_id, "date": date[sel],
        "open": out["open"], "high": out["high"], "low": out["low"], "close": out["close"],
        "volume": v, "ret": ret[sel], "mktcap": mktcap,
        "exchange": pd.Categorical.from_codes(ecode, categories=cats) if cats
        else pd.Categorical([], categories=[]),
        "source": pd.Categorical.from_codes(np.zeros(len(sel), np.int8), categories=["crsp"]),
    })
    if len(sel):
        last = np.r_[np.flatnonzero(stock_id[1:] != stock_id[:-1]), len(sel) - 1]
    else:
        last = np.empty(0, np.int64)
    tickers = (df[tick].astype("string").to_numpy(dtype=object)[sel][last] if tick
               else np.array([str(s) for s in stock_id[last]], dtype=object))
    stocks = pd.DataFrame({
        "stock_id": stock_id[last],
        "ticker": pd.array([str(t) if t is not pd.NA else str(s) for t, s in zip(tickers, stock_id[last])],
                           dtype="string"),
        "exchange": pd.array([cats[i] for i in ecode[last]], dtype="string"),
    })
    counts["stocks_in_panel"] = int(len(last))
    counts["output_rows"] = int(len(sel))
    return panel, stocks, counts

