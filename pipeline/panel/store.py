"""The canonical daily panel: schema, writer and reader (ARCHITECTURE.md contract 1).

Layout of a panel folder::

    panel/
      year=1993/part.parquet ...   one row per (stock_id, date), sorted by stock_id then date
      stocks.parquet               stock_id, ticker, exchange: the id map
      meta.json                    source, mktcap_is_proxy, row counts, cleaning counts by rule
      config.yaml                  the resolved config that produced it
      _DONE.json                   completion marker (settings hash)

Columns (dtype; units):
    stock_id  int32     stable id (PERMNO for CRSP; assigned in ticker order for free data)
    date      datetime64[ns]  trading day
    open, high, low, close  float64  raw prices in the source's units; NaN = missing
    volume    float64   shares traded; NaN = missing (zero volume is missing, METHOD 4.6)
    ret       float64   daily return, total where the source has one, else close-to-close; never NaN
                        (records with a missing return are removed, METHOD 2.7)
    mktcap    float64   market cap at the close, $ thousands for CRSP; for free data the
                        dollar-volume proxy of METHOD 3.5 in $ (meta.json says which)
    exchange  string    exchange name (e.g. "NYSE", "NASDAQ", "AMEX")
    source    string    the adapter that produced the row
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io import read_json, write_json, write_parquet

PANEL_COLUMNS = ["stock_id", "date", "open", "high", "low", "close", "volume", "ret", "mktcap",
                 "exchange", "source"]
FLOAT_COLUMNS = ["open", "high", "low", "close", "volume", "ret", "mktcap"]


class PanelContractError(InputError):
    """A panel (or a file claiming to be one) violates the canonical contract."""


@dataclass
class PanelMeta:
    source: str
    mktcap_is_proxy: bool
    mktcap_units: str  # "$ thousands" (CRSP) or "$ (proxy: trailing mean close*volume)"
    n_rows: int = 0
    n_stocks: int = 0
    first_date: str = ""
    last_date: str = ""
    years: list[int] = field(default_factory=list)
    # Cleaning and filter counts by rule name: what was dropped, repaired or masked.
    counts: dict[str, int] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)

    @property
    def weighting_label(self) -> str:
        """How value weights must be described in every table that uses them (METHOD 3.5)."""
        return "dollar-volume-weighted (proxy)" if self.mktcap_is_proxy else "value-weighted"


def check_contract(df: pd.DataFrame, where: str = "panel") -> None:
    """Refuse a frame that is not a canonical panel, naming the first offending column or row."""
    missing = [c for c in PANEL_COLUMNS if c not in df.columns]
    if missing:
        raise PanelContractError(f"{where}: missing columns {missing}")
    if not np.issubdtype(df["stock_id"].dtype, np.integer):
        raise PanelContractError(f"{where}: stock_id must be integer, got {df['stock_id'].dtype}")
    if not np.issubdtype(df["date"].dtype, np.datetime64):
        raise PanelContractError(f"{where}: date must be datetime64, got {df['date'].dtype}")
    if df["ret"].isna().any():
        i = int(np.flatnonzero(df["ret"].isna().to_numpy())[0])
        raise PanelContractError(f"{where}: missing ret at row {i} "
                                 f"(stock_id={df['stock_id'].iat[i]}, date={df['date'].iat[i]})")
    sid = df["stock_id"].to_numpy()
    d = df["date"].to_numpy()
    if len(df) > 1:
        order_bad = (sid[1:] < sid[:-1]) | ((sid[1:] == sid[:-1]) & (d[1:] <= d[:-1]))
        if order_bad.any():
            i = int(np.flatnonzero(order_bad)[0]) + 1
            dup = sid[i] == sid[i - 1] and d[i] == d[i - 1]
            what = "duplicate (stock_id, date)" if dup else "rows not sorted by (stock_id, date)"
            raise PanelContractError(f"{where}: {what} at row {i} "
                                     f"(stock_id={sid[i]}, date={pd.Timestamp(d[i]).date()})")
    for c in ("open", "high", "low", "close"):
        bad = df[c].to_numpy() <= 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PanelContractError(f"{where}: non-positive {c} at row {i} "
                                     f"(stock_id={sid[i]}, date={pd.Timestamp(d[i]).date()}); "
                                     "missing prices must be NaN")


ROW_GROUP_ROWS = 65_536  # about 260 stocks of one year's daily rows


def write_panel(directory: str | Path, df: pd.DataFrame, stocks: pd.DataFrame,
                meta: PanelMeta) -> None:
    """Write a canonical panel partitioned by year; each file atomically.

    ``df`` must satisfy :func:`check_contract`; ``stocks`` has ``stock_id, ticker, exchange``.
    The completion marker is the caller's job (it knows the settings hash).
    """
    directory = Path(directory)
    check_contract(df)
    df = df[PANEL_COLUMNS].copy()
    df["stock_id"] = df["stock_id"].astype("int32")
    for c in FLOAT_COLUMNS:
        df[c] = df[c].astype("float64")
    years = df["date"].dt.year.to_numpy()
    uniq = np.unique(years)
    for y in uniq:
        part = df[years == y]
        # Dictionary-encode only the low-cardinality columns: trying it on the float columns
        # roughly doubles the write time of an 11M-row panel for no size gain. Row groups of a
        # few hundred stocks: the image stage reads a shard of stocks by a stock_id range filter,
        # and pyarrow then skips the row groups outside it by their statistics.
        write_parquet(directory / f"year={int(y)}" / "part.parquet", part,
                      use_dictionary=["stock_id", "exchange", "source"],
                      row_group_size=ROW_GROUP_ROWS)
    write_parquet(directory / "stocks.parquet", stocks.reset_index(drop=True))
    meta.n_rows = int(len(df))
    meta.n_stocks = int(df["stock_id"].nunique())
    meta.first_date = str(df["date"].min().date()) if len(df) else ""
    meta.last_date = str(df["date"].max().date()) if len(df) else ""
    meta.years = [int(y) for y in uniq]
    write_json(directory / "meta.json", asdict(meta))


def read_meta(directory: str | Path) -> PanelMeta:
    p = Path(directory) / "meta.json"
    if not p.exists():
        raise FileNotFoundError(f"no panel at {directory} (missing meta.json): run `make panel` first")
    return PanelMeta(**read_json(p))


def read_panel(directory: str | Path, years: list[int] | range | None = None,
               columns: list[str] | None = None,
               stock_ids: np.ndarray | list[int] | None = None) -> pd.DataFrame:
    """Read the panel (optionally some years, columns or stocks), sorted by (stock_id, date)."""
    directory = Path(directory)
    meta = read_meta(directory)
    want = meta.years if years is None else [y for y in years if y in meta.years]
    cols = None if columns is None else list(dict.fromkeys(["stock_id", "date", *columns]))
    filters = None
    if stock_ids is not None:
        filters = [("stock_id", "in", [int(s) for s in stock_ids])]
    tables = [pq.read_table(directory / f"year={y}" / "part.parquet", columns=cols, filters=filters)
              for y in want]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in (cols or PANEL_COLUMNS)})
    df = pa.concat_tables(tables).to_pandas()
    df = df.sort_values(["stock_id", "date"], kind="stable").reset_index(drop=True)
    return df


def read_stocks(directory: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(directory) / "stocks.parquet")
