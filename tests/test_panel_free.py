"""Free-data adapters (Stooq bulk / Kaggle / Parquet extract, Yahoo) on hand-made fixtures in the
exact source layouts (tests/fixtures/panel/), every expected value computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.panel.build import build_panel
from pipeline.panel.clean import parse_dates, yyyymmdd_to_datetime
from pipeline.panel.stooq import detect_layout
from pipeline.panel.store import check_contract

FIX = Path(__file__).parent / "fixtures" / "panel"
BULK = FIX / "stooq_bulk"


def cfg_for(source: str, path: Path | str, *sets: str):
    return load_config(None, [f"panel.source={source}", f"panel.path={path}",
                              "panel.start=2019-01-01", "panel.end=2019-01-31",
                              "panel.mktcap_proxy_window=3", *sets])


def rows(df: pd.DataFrame, sid: int) -> pd.DataFrame:
    return df[df.stock_id == sid].reset_index(drop=True)


def d(s: str) -> pd.Timestamp:
    return pd.Timestamp(s)


# Expected cleaned AAA (NYSE, stock 1) from tests/fixtures/panel/stooq_bulk/.../aaa.us.txt:
#   12-31 first record (no return), 01-03 high<low -> H'=11.2 L'=10.8, 01-04 zero open and zero
#   volume -> NaN, 01-05 Saturday dropped, 01-07 close 0 dropped, 01-08 duplicate: last kept
#   (close 12.1 > high 12 -> H'=12.1), 02-01 after end.
AAA_DATES = [d("2019-01-02"), d("2019-01-03"), d("2019-01-04"), d("2019-01-08")]
AAA_RET = [11 / 10 - 1, 10.9 / 11 - 1, 11 / 10.9 - 1, 12.1 / 11 - 1]
# Proxy, window 3 (min 1 present): dollar volumes 10000, 22000, 16350, NaN, 36300.
AAA_CAP = [(10000 + 22000) / 2, (10000 + 22000 + 16350) / 3, (22000 + 16350) / 2,
           (16350 + 36300) / 2]

BULK_COUNTS = {
    "files_read": 5, "empty_files": 1, "etf_files_skipped": 1, "input_rows": 20,
    "noncommon_tickers": 2, "noncommon_rows": 4, "after_end": 2, "weekend_rows": 1,
    "duplicate_rows": 1, "missing_close": 0, "nonpositive_close": 1, "zero_open_masked": 1,
    "zero_high_masked": 0, "zero_low_masked": 0, "high_below_low": 1, "open_outside_low_high": 1,
    "close_outside_low_high": 2, "ohlc_repaired_rows": 2, "zero_volume_masked": 1,
    "first_record_no_return": 3, "before_start": 1, "tickers_in_panel": 3, "output_rows": 7,
}


def test_stooq_bulk_folder_exact():
    cfg = cfg_for("stooq", BULK)
    assert detect_layout(BULK) == "bulk"
    df, stocks, meta = build_panel(cfg)
    check_contract(df)
    assert meta.counts == BULK_COUNTS
    assert meta.mktcap_is_proxy and meta.source == "stooq"
    assert stocks.to_dict("list") == {"stock_id": [1, 2, 3], "ticker": ["AAA", "CCC", "DDD"],
                                      "exchange": ["NYSE", "NASDAQ", "AMEX"]}
    assert df.stock_id.dtype == np.int32 and str(df.date.dtype) == "datetime64[ns]"
    a = rows(df, 1)
    assert a.date.tolist() == AAA_DATES
    np.testing.assert_allclose(a.ret, AAA_RET, rtol=1e-12)
    np.testing.assert_allclose(a.mktcap, AAA_CAP, rtol=1e-12)
    np.testing.assert_array_equal(a.open, [10, 11, np.nan, 11])
    np.testing.assert_array_equal(a.high, [11, 11.2, 11.5, 12.1])
    np.testing.assert_array_equal(a.low, [9, 10.8, 10.5, 10.9])
    np.testing.assert_array_equal(a.close, [11, 10.9, 11, 12.1])
    np.testing.assert_array_equal(a.volume, [2000, 1500, np.nan, 3000])
    assert set(a.exchange) == {"NYSE"} and set(df.source) == {"stooq"}
    c = rows(df, 2)
    assert c.date.tolist() == [d("2019-01-03"), d("2019-01-04")]
    np.testing.assert_allclose(c.ret, [0.1, 19.8 / 22 - 1], rtol=1e-12)
    np.testing.assert_allclose(c.mktcap, [(10000 + 13200) / 2, (10000 + 13200 + 13860) / 3],
                               rtol=1e-12)
    # DDD: 12-28 first record, 12-31 before start but its close is the base of 01-02's return.
    dd = rows(df, 3)
    assert dd.date.tolist() == [d("2019-01-02")]
    np.testing.assert_allclose(dd.ret, [4.95 / 5.5 - 1], rtol=1e-12)
    np.testing.assert_allclose(dd.mktcap, [(500 + 550 + 990) / 3], rtol=1e-12)
    assert set(dd.exchange) == {"AMEX"}


def test_stooq_bulk_mask_mode_and_keep_noncommon():
    df, stocks, meta = build_panel(cfg_for("stooq", BULK, "panel.ohlc_errors=mask",
                                           "panel.common_only=false"))
    assert meta.counts["ohlc_masked_rows"] == 2 and "ohlc_repaired_rows" not in meta.counts
    assert meta.counts["noncommon_tickers"] == 0 and meta.counts["noncommon_rows"] == 0
    assert stocks.ticker.tolist() == ["AAA", "AAA_A", "BBB-WS", "CCC", "DDD"]  # sorted -> 1..5
    a = rows(df, 1)
    np.testing.assert_array_equal(a.high, [11, np.nan, 11.5, np.nan])  # glyph skipped
    np.testing.assert_array_equal(a.low, [9, np.nan, 10.5, np.nan])
    np.testing.assert_array_equal(a.open, [10, 11, np.nan, 11])  # open and close untouched
    pref = rows(df, 2)
    assert pref.date.tolist() == [d("2019-01-03")]
    np.testing.assert_allclose(pref.ret, [25.1 / 25 - 1], rtol=1e-12)


def test_optional_filters_drop_after_returns():
    # max |ret| 0.095 drops AAA 01-02 and 01-08 (+10%), CCC 01-03 (+10%) and 01-04 (-10%), DDD
    # 12-31 (+10%, before start: the filter comes first) and 01-02 (-10%); min price 10.95 then
    # drops AAA 01-03 (close 10.9). The survivor's return still spans consecutive closes.
    df, _, meta = build_panel(cfg_for("stooq", BULK, "panel.max_abs_ret=0.095",
                                      "panel.min_price=10.95"))
    assert meta.counts["abs_ret_above_max"] == 6
    assert meta.counts["close_below_min_price"] == 1
    assert df.date.tolist() == [d("2019-01-04")]
    np.testing.assert_allclose(df.ret, [11 / 10.9 - 1], rtol=1e-12)
    assert df.stock_id.tolist() == [1]


def test_kaggle_layout_skips_etfs_and_weekends():
    path = FIX / "kaggle"
    assert detect_layout(path) == "kaggle"
    df, stocks, meta = build_panel(cfg_for("stooq", path))
    c = meta.counts
    assert (c["files_read"], c["empty_files"], c["etf_files_skipped"]) == (1, 1, 1)
    assert (c["input_rows"], c["weekend_rows"], c["zero_volume_masked"]) == (4, 1, 1)
    assert c["first_record_no_return"] == 1 and c["output_rows"] == 2
    assert stocks.to_dict("list") == {"stock_id": [1], "ticker": ["XXX"], "exchange": ["UNKNOWN"]}
    assert df.date.tolist() == [d("2019-01-03"), d("2019-01-07")]
    np.testing.assert_allclose(df.ret, [0.1, 12.1 / 11 - 1], rtol=1e-12)
    np.testing.assert_array_equal(df.volume, [100, np.nan])
    np.testing.assert_allclose(df.mktcap, [1050, 1050], rtol=1e-12)  # (1000+1100)/2 both days
    assert set(df.source) == {"kaggle"}


def write_extract(path: Path, recs: list[tuple]) -> None:
    """A Parquet file with the exact schema of the shared extract (dictionary tickers, float32)."""
    t, dt, o, h, lo, c, v, e = zip(*recs)
    table = pa.table({
        "ticker": pa.array(t).dictionary_encode(),
        "date": pa.array(pd.to_datetime(list(dt)).to_numpy().astype("datetime64[us]")),
        "open": pa.array(o, pa.float32()), "high": pa.array(h, pa.float32()),
        "low": pa.array(lo, pa.float32()), "close": pa.array(c, pa.float32()),
        "vol": pa.array(v, pa.float32()), "exch": pa.array(e).dictionary_encode(),
    })
    pq.write_table(table, path)


EXTRACT = [
    ("ZZZ.US", "2019-01-02", 10, 11, 9, 10, 100, "nasdaq stocks"),
    ("ZZZ.US", "2019-01-03", 10, 10.5, 10.5, 10.5, 0, "nasdaq stocks"),
    ("ZZZ.US", "2019-01-04", 10.5, 12, 10, 11.5, 300, "nasdaq stocks"),
    ("AB_P.US", "2019-01-02", 25, 25, 25, 25, 10, "nyse stocks"),
    ("AB_P.US", "2019-01-03", 25, 25, 25, 25, 10, "nyse stocks"),
    ("KK.US", "2019-01-02", 4, 4, 0, 4, 1000, "nysemkt stocks"),  # zero low: missing
    ("KK.US", "2019-01-03", 4, 4.5, 3.5, 4.4, 1000, "nysemkt stocks"),
]


def test_parquet_extract_layout(tmp_path):
    p = tmp_path / "extract.parquet"
    write_extract(p, EXTRACT)
    assert detect_layout(p) == "parquet"
    df, stocks, meta = build_panel(cfg_for("stooq", p))
    assert stocks.to_dict("list") == {"stock_id": [1, 2], "ticker": ["KK", "ZZZ"],
                                      "exchange": ["AMEX", "NASDAQ"]}
    c = meta.counts
    assert (c["input_rows"], c["noncommon_tickers"], c["noncommon_rows"]) == (7, 1, 2)
    assert (c["zero_low_masked"], c["zero_volume_masked"], c["first_record_no_return"]) == (1, 1, 2)
    assert c["output_rows"] == 3
    assert (c["open_outside_low_high"], c["ohlc_repaired_rows"]) == (1, 1)  # ZZZ 01-03 open < low
    f = np.float32
    kk = rows(df, 1)
    np.testing.assert_allclose(kk.ret, [float(f(4.4)) / 4 - 1], rtol=1e-12)
    np.testing.assert_allclose(kk.mktcap, [(4 * 1000 + float(f(4.4)) * 1000) / 2], rtol=1e-12)
    z = rows(df, 2)
    np.testing.assert_allclose(z.ret, [0.05, float(f(11.5)) / 10.5 - 1], rtol=1e-12)
    np.testing.assert_array_equal(z.volume, [np.nan, 300])
    np.testing.assert_array_equal(z.low, [10, 10])  # L' = min(O, H, L, C) = the open
    np.testing.assert_allclose(z.mktcap, [1000, (1000 + 11.5 * 300) / 2], rtol=1e-12)
    assert set(z.exchange) == {"NASDAQ"}


def test_yahoo_returns_from_adj_close():
    df, stocks, meta = build_panel(cfg_for("yahoo", FIX / "yahoo"))
    c = meta.counts
    assert (c["input_rows"], c["missing_close"], c["zero_volume_masked"]) == (6, 1, 1)
    assert c["first_record_no_return"] == 2 and c["output_rows"] == 3
    assert meta.mktcap_is_proxy and meta.source == "yahoo"
    assert stocks.ticker.tolist() == ["AAPL", "MSFT"]
    a = rows(df, 1)
    assert a.date.tolist() == [d("2019-01-04"), d("2019-01-07")]  # the null row is gone
    # Total return from Adj Close (5 -> 5.25 -> 5.5125), not close-to-close (10 -> 11 -> 10.5).
    np.testing.assert_allclose(a.ret, [0.05, 0.05], rtol=1e-12)
    np.testing.assert_array_equal(a.close, [11, 10.5])
    np.testing.assert_allclose(a.mktcap, [(1000 + 2200) / 2, (1000 + 2200) / 2], rtol=1e-12)
    m = rows(df, 2)
    np.testing.assert_allclose(m.ret, [88.2 / 90 - 1], rtol=1e-12)
    np.testing.assert_allclose(m.mktcap, [(100_000 + 196_000) / 2], rtol=1e-12)


def test_shared_stooq_sample_folder(shared_parquet):
    """The ten native files shipped beside the shared extract (empty file, _a, -ws included)."""
    folder = shared_parquet.parent / "stooq-sample"
    cfg = load_config(None, ["panel.source=stooq", f"panel.path={folder}"])
    df, stocks, meta = build_panel(cfg)
    c = meta.counts
    assert (c["files_read"], c["empty_files"], c["noncommon_tickers"]) == (9, 1, 2)
    assert stocks.ticker.tolist() == ["AAPL", "ACU", "AE", "IBM", "INTC", "KO", "MSFT"]
    assert stocks.exchange.tolist() == ["NASDAQ", "AMEX", "AMEX", "NYSE", "NASDAQ", "NYSE", "NASDAQ"]
    assert df.date.min() == d("1992-06-01") and df.date.max() == d("2019-12-31")
    # IBM's 1992-06-01 return uses the 1992-05-29 close from the same file (history before start).
    ibm = pd.read_csv(folder / "data/daily/us/nyse stocks/1/ibm.us.txt")
    closes = ibm.set_index("<DATE>")["<CLOSE>"]
    got = rows(df, 4).set_index("date").ret
    assert got[d("1992-06-01")] == pytest.approx(closes[19920601] / closes[19920529] - 1, rel=1e-12)


def test_date_helpers():
    out, bad = yyyymmdd_to_datetime(np.array([20190228, 20190229, 20200229, 20191301, 19000101]))
    assert bad.tolist() == [False, True, False, True, False]
    assert out[0] == np.datetime64("2019-02-28") and out[2] == np.datetime64("2020-02-29")
    out, bad = parse_dates(pd.Series(["19930104", "1993-01-05", "1993-02-30", "x"]), "auto")
    assert bad.tolist() == [False, False, True, True]
    assert out[1] == np.datetime64("1993-01-05")
    _, bad = parse_dates(pd.Series(["1993-01-05 10:30"]), "auto")
    assert bad.tolist() == [True]  # daily data only
