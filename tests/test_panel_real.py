"""The shared real Stooq extract (../shared/data): documented properties through the adapter.

To stay fast the whole 11.6M-row file is read once, only for the columns needed to choose a
subset: every non-common ticker (all 227 of them), every ticker with a high < low row, and three
large caps. The subset is written with the extract's exact schema and run through the adapter.
The full-file conversion is timed by ``make bench-panel``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.panel.build import build_panel
from pipeline.panel.store import check_contract

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def subset(shared_parquet, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    full = pq.read_table(shared_parquet)  # the one full read of this module
    tick = full.column("ticker").to_pandas()  # categorical: no 11M Python strings
    hl = tick[(full.column("high").to_numpy() < full.column("low").to_numpy())].astype(str)
    assert len(hl) == 35  # README: 35 rows with high < low
    noncommon = {str(x) for x in tick.cat.categories if "_" in x or "-" in x}
    pick = sorted(noncommon | set(hl) | {"IBM.US", "AAPL.US", "KO.US"})
    keep = tick.isin(pick).to_numpy()
    del tick
    sub = full.filter(pa.array(keep))
    del full
    path = tmp_path_factory.mktemp("real") / "subset.parquet"
    pq.write_table(sub, path)
    return path, sub.to_pandas()


def cfg(path: Path, *sets: str):
    return load_config(None, ["panel.source=stooq", f"panel.path={path}", *sets])


def test_real_noncommon_dropped_and_ohlc_repaired(subset):
    path, raw = subset
    tick = raw.ticker.astype(str)
    nc = tick.str.contains("[_-]", regex=True)
    df, stocks, meta = build_panel(cfg(path))
    check_contract(df)
    c = meta.counts
    assert c["noncommon_tickers"] == 227  # README: 227 tickers carry '_' or '-'
    assert c["noncommon_rows"] == int(nc.sum())
    assert not stocks.ticker.str.contains("[_-]", regex=True).any()
    common = raw[~nc]
    assert c["high_below_low"] == int((common.high < common.low).sum())
    # After repair every kept row is consistent: L <= O, C <= H (missing values skipped).
    for col in ("open", "close"):
        x = df[col]
        assert not ((x > df.high) | (x < df.low)).any()
    assert not (df.high < df.low).any()
    # One repaired row exactly: H' = max(O,H,L,C), L' = min(O,H,L,C) of the float32 inputs.
    bad = common[common.high < common.low].iloc[0]
    sid = int(stocks.stock_id[stocks.ticker == bad.ticker.replace(".US", "")].iloc[0])
    got = df[(df.stock_id == sid) & (df.date == bad.date)].iloc[0]
    vals = np.array([bad.open, bad.high, bad.low, bad.close], dtype=np.float64)
    vals = vals[vals > 0]
    assert got.high == vals.max() and got.low == vals.min()


def test_real_all_tickers_counts(subset):
    path, raw = subset
    df, stocks, meta = build_panel(cfg(path, "panel.common_only=false"))
    c = meta.counts
    n_tickers = raw.ticker.astype(str).nunique()
    assert c["high_below_low"] == 35 and c["ohlc_repaired_rows"] >= 35
    assert c["zero_volume_masked"] == int((raw.vol == 0).sum())
    assert c["first_record_no_return"] == n_tickers == len(stocks)
    assert c["output_rows"] == len(raw) - n_tickers
    assert (c["weekend_rows"], c["duplicate_rows"], c["nonpositive_close"]) == (0, 0, 0)


def test_real_ibm_returns_and_proxy(subset):
    path, raw = subset
    df, stocks, _ = build_panel(cfg(path))
    ibm_id = int(stocks.stock_id[stocks.ticker == "IBM"].iloc[0])
    got = df[df.stock_id == ibm_id].set_index("date")
    r = raw[raw.ticker.astype(str) == "IBM.US"].sort_values("date").set_index("date")
    close = r.close.astype(np.float64)
    ref_ret = (close / close.shift(1) - 1).iloc[1:]
    assert got.index.equals(ref_ret.index)
    np.testing.assert_allclose(got.ret, ref_ret, rtol=1e-12)
    dv = (close * r.vol.astype(np.float64).replace(0, np.nan))
    ref_cap = dv.rolling(60, min_periods=20).mean().iloc[1:]
    np.testing.assert_allclose(got.mktcap, ref_cap, rtol=1e-9)
    assert got.exchange.astype(str).unique().tolist() == ["NYSE"]
