"""Yahoo-style CSV adapter (docs/method.md 4.4).

A folder of per-ticker files ``<TICKER>.csv`` (or one such file) with the header
``Date,Open,High,Low,Close,Adj Close,Volume``; ticker = file stem (upper case). Yahoo writes
``null`` in every field of a day it has no data for: such cells are missing, and a row without a
close or adjusted close is dropped (counted as ``missing_close`` / ``missing_adj_close``).

Returns come from **Adj Close** (total return: dividends and splits); OHLC are taken as given
(split-adjusted). The market-cap proxy uses Close x Volume (METHOD 3.5). There is no exchange or
security-type metadata, so the exchange is ``UNKNOWN`` and ETFs cannot be told apart (METHOD 4.4
drops them only "when metadata allows").
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.progress import progress
from pipeline.config import PanelConfig
from pipeline.panel.clean import (
    UNKNOWN_EXCHANGE,
    Column,
    FreeRaw,
    FreeRawBuilder,
    check_not_negative,
    clean_free,
    input_error,
    normalise_ticker,
    read_header,
    read_text_table,
    source_files,
)

log = logging.getLogger(__name__)

NA = ("null", "")
YAHOO_COLUMNS = [Column("Date", "date", date_format="iso"), Column("Open", "float", NA),
                 Column("High", "float", NA), Column("Low", "float", NA),
                 Column("Close", "float", NA), Column("Adj Close", "float", NA),
                 Column("Volume", "float", NA)]


def read_yahoo(path: Path, counts: dict[str, int]) -> FreeRaw:
    """Yahoo CSV folder or file -> FreeRaw (with adj_close). Negative prices/volume are errors."""
    files = source_files(path, ".csv", "expected Yahoo per-ticker CSVs")
    b = FreeRawBuilder(with_adj_close=True)
    n_empty = n_read = 0
    for f in progress(files, desc="yahoo files", unit="file", disable=len(files) < 200):
        header = read_header(f)
        if header is not None and "adj close" not in (h.lower() for h in header):
            raise input_error(f, "line 1", "Adj Close",
                              f"missing; the header has {header} (Yahoo returns need Adj Close)")
        t = read_text_table(f, YAHOO_COLUMNS)
        if t is None:
            n_empty += 1
            continue
        n_read += 1
        cols = {k: t[k].to_numpy() for k in ("Open", "High", "Low", "Close", "Adj Close", "Volume")}
        check_not_negative(f, lambda i: f"line {i + 2}",
                           {k: cols[k] for k in ("Open", "High", "Low", "Volume")})
        b.add(normalise_ticker(f.stem), UNKNOWN_EXCHANGE, t["Date"].to_numpy(), cols["Open"],
              cols["High"], cols["Low"], cols["Close"], cols["Volume"], cols["Adj Close"])
    counts["files_read"] = n_read
    counts["empty_files"] = n_empty
    return b.build()


def build_yahoo(cfg: PanelConfig, path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Yahoo source -> (canonical panel, stocks, counts)."""
    counts: dict[str, int] = {}
    raw = read_yahoo(path, counts)
    return clean_free(raw, cfg, "yahoo", counts)
