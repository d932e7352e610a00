"""The generic OHLCV adapter (panel.source: generic) on fixtures in three real layouts
(tests/fixtures/panel/generic/): Binance's header-less daily kline CSVs (one file per symbol and
month, epoch-millisecond open times), a folder of one CSV per instrument, one long CSV with a ticker
column (and the same rows as Parquet). Every expected value is computed by hand from the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.panel.build import build_panel, make_panel, panel_settings_hash
from pipeline.panel.clean import PanelInputError
from pipeline.panel.store import check_contract

FIX = Path(__file__).parent / "fixtures" / "panel" / "generic"
KLINE_HEADER = ("[open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore]")
BINANCE = [f"panel.path={FIX / 'binance'}", f"generic.header={KLINE_HEADER}",
           "generic.columns.date=open_time", "generic.date_format=unix_ms",
           "generic.ticker_pattern=^([A-Z0-9]+)-1d-"]
LONG = ["generic.columns={date: time, open: o, high: h, low: l, close: c, volume: vol, ticker: symbol}"]


def cfg_for(*sets: str, tmp: Path | None = None):
    base = ["panel.source=generic", "panel.common_only=false", "panel.start=2020-12-01",
            "panel.end=2021-01-31", "panel.mktcap_proxy_window=3", "images.end_year=2021"]
    if tmp is not None:
        base.append(f"data_dir={tmp}")
    return load_config(None, base + list(sets))


def d(*days: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(x) for x in days]


def proxy3(dv: list[float]) -> list[float]:
    """Trailing mean over 3 records (window 3, at least 1 present), first record included."""
    return [float(np.nanmean(dv[max(0, i - 2):i + 1])) for i in range(len(dv))]


def test_binance_klines_exact():
    df, stocks, meta = build_panel(cfg_for(*BINANCE))
    check_contract(df)
    assert stocks.ticker.tolist() == ["BTCUSDT", "ETHUSDT"]
    btc = df[df.stock_id == 1].reset_index(drop=True)
    # 2020-12-30 is the first record (no return); 2021-01-01 is in two files: the later file's row
    # (close 29300) replaces the first's (29000); Saturday 01-02 and Sunday 01-03 stay in.
    assert btc.date.tolist() == d("2020-12-31", "2021-01-01", "2021-01-02", "2021-01-03", "2021-01-04")
    closes = [27500, 28900, 29300, 32200, 33000, 32000]
    assert btc.close.tolist() == closes[1:]
    np.testing.assert_allclose(btc.ret, [closes[i] / closes[i - 1] - 1 for i in range(1, 6)])
    assert btc.open.tolist() == [27500, 28900, 29300, 32200, 33000]
    assert btc.high.tolist() == [29000, 29600, 33000, 34800, 33600]
    assert btc.low.tolist() == [27000, 28600, 29000, 32000, 28000]
    assert btc.volume.tolist() == [120, 95, 150, 160, 200]
    dv = [27500 * 100, 28900 * 120, 29300 * 95, 32200 * 150, 33000 * 160, 32000 * 200]
    np.testing.assert_allclose(btc.mktcap, proxy3(dv)[1:])
    eth = df[df.stock_id == 2].reset_index(drop=True)
    assert eth.date.tolist() == d("2021-01-02", "2021-01-03")
    np.testing.assert_allclose(eth.ret, [775 / 730 - 1, 980 / 775 - 1])
    assert (df.exchange == "UNKNOWN").all() and (df.source == "generic").all()
    c = meta.counts
    assert (c["files_read"], c["input_rows"], c["duplicate_rows"], c["weekend_rows"],
            c["first_record_no_return"], c["output_rows"]) == (3, 10, 1, 0, 2, 7)
    assert meta.mktcap_is_proxy and meta.source == "generic"
    assert "one file per instrument" in meta.inputs[0]


def test_per_ticker_folder_exact():
    df, stocks, meta = build_panel(cfg_for(f"panel.path={FIX / 'per_ticker'}"))
    assert stocks.ticker.tolist() == ["AAA", "BBB"]
    aaa = df[df.stock_id == 1].reset_index(drop=True)
    assert aaa.date.tolist() == d("2021-01-02", "2021-01-03", "2021-01-04")
    np.testing.assert_allclose(aaa.ret, [10.8 / 10 - 1, 11 / 10.8 - 1, 11.4 / 11 - 1])
    # 01-02: zero volume -> missing; 01-03: high 10.9 < low 11.2 -> H' = 11.2, L' = 10.8;
    # 01-04: open "null" -> missing.
    assert np.isnan(aaa.volume[0]) and aaa.volume[1:].tolist() == [1500, 1200]
    assert (aaa.high[1], aaa.low[1]) == (11.2, 10.8)
    assert np.isnan(aaa.open[2])
    np.testing.assert_allclose(aaa.mktcap, [10000.0, (10000 + 16500) / 2, (16500 + 11.4 * 1200) / 2])
    bbb = df[df.stock_id == 2].reset_index(drop=True)
    # 01-02 has no close: dropped, so 01-03's return spans 01-01 .. 01-03.
    assert bbb.date.tolist() == d("2021-01-03") and bbb.ret.tolist() == pytest.approx([52 / 50 - 1])
    c = meta.counts
    assert (c["missing_close"], c["ohlc_repaired_rows"], c["zero_volume_masked"], c["output_rows"]) == \
        (1, 1, 1, 4)


def _long_expected(df: pd.DataFrame) -> None:
    sol = df[df.stock_id == 1].reset_index(drop=True)
    xrp = df[df.stock_id == 2].reset_index(drop=True)
    assert sol.date.tolist() == d("2021-01-02", "2021-01-03")
    # SOL 01-02 appears twice: the later row (close 2.1, volume 13000) is kept.
    assert sol.close.tolist() == [2.1, 2.2] and sol.volume.tolist() == [13000, 9000]
    np.testing.assert_allclose(sol.ret, [2.1 / 1.8 - 1, 2.2 / 2.1 - 1])
    np.testing.assert_allclose(xrp.ret, [0.23 / 0.22 - 1, 0.21 / 0.23 - 1])
    np.testing.assert_allclose(sol.mktcap, [(18000 + 27300) / 2, (18000 + 27300 + 19800) / 3])


def test_long_csv_exact():
    df, stocks, meta = build_panel(cfg_for(f"panel.path={FIX / 'long' / 'prices.csv'}", *LONG))
    assert stocks.ticker.tolist() == ["SOL", "XRP"]
    _long_expected(df)
    assert meta.counts["duplicate_rows"] == 1 and meta.counts["output_rows"] == 4
    assert "one long file" in meta.inputs[0]


def test_long_parquet_same_rows(tmp_path):
    csv = pd.read_csv(FIX / "long" / "prices.csv", dtype={"time": str})
    table = pa.table({"symbol": csv.symbol, "time": pd.to_datetime(csv.time, format="%Y%m%d"),
                      "o": csv.o, "h": csv.h, "l": csv.l, "c": csv.c, "vol": csv.vol.astype("int64")})
    pq.write_table(table, tmp_path / "prices.parquet")
    df, stocks, _ = build_panel(cfg_for(f"panel.path={tmp_path / 'prices.parquet'}", *LONG))
    _long_expected(df)
    ref, _, _ = build_panel(cfg_for(f"panel.path={FIX / 'long' / 'prices.csv'}", *LONG))
    pd.testing.assert_frame_equal(df, ref)


def test_panel_stage_writes_and_hashes_the_generic_section(tmp_path):
    cfg = cfg_for(f"panel.path={FIX / 'per_ticker'}", tmp=tmp_path)
    out = make_panel(cfg)
    assert (out / "_DONE.json").exists()
    other = cfg_for(f"panel.path={FIX / 'per_ticker'}", "generic.exchange=CRYPTO", tmp=tmp_path)
    assert panel_settings_hash(other) != panel_settings_hash(cfg)


# --------------------------------------------------------------------------------------------------
# Bad files


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_missing_column_named_with_file(tmp_path):
    p = _write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close\n2021-01-01,1,1,1,1\n")
    with pytest.raises(PanelInputError, match=r"AAA\.csv: line 1: missing column\(s\) \['volume "
                                              r"\(generic\.columns\.volume\)'\]"):
        build_panel(cfg_for(f"panel.path={p}"))


def test_unparseable_value_names_file_line_column(tmp_path):
    p = _write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n2021-01-01,1,1,1,1,5\n"
               "2021-01-02,1,abc,1,1,5\n")
    with pytest.raises(PanelInputError, match=r"AAA\.csv: line 3, column 'High': 'abc' is not a number"):
        build_panel(cfg_for(f"panel.path={p}"))


def test_headerless_bad_value_names_line(tmp_path):
    src = (FIX / "binance" / "ETHUSDT-1d-2021-01.csv").read_text().splitlines()
    src[1] = src[1].replace("790.00000000", "n/a", 1)
    p = _write(tmp_path, "ETHUSDT-1d-2021-01.csv", "\n".join(src) + "\n")
    with pytest.raises(PanelInputError, match=r"ETHUSDT-1d-2021-01\.csv: line 2, column 'high': "
                                              r"'n/a' is not a number"):
        build_panel(cfg_for(*BINANCE[1:], f"panel.path={p}"))


def test_intraday_timestamps_refused(tmp_path):
    src = (FIX / "binance" / "ETHUSDT-1d-2021-01.csv").read_text().splitlines()
    src[2] = src[2].replace("1609632000000", "1609635600000", 1)  # 01:00 UTC: an hourly bar
    p = _write(tmp_path, "ETHUSDT-1h-2021-01.csv", "\n".join(src) + "\n")
    with pytest.raises(PanelInputError, match=r"line 3, column 'open_time': 1609635600000 \(unix_ms\) "
                                              r"is 2021-01-03 01:00:00 UTC, not midnight.*daily bars only"):
        build_panel(cfg_for(*BINANCE[1:4], f"panel.path={p}"))
    q = _write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n2021-01-01 00:00,1,1,1,1,5\n"
               "2021-01-01 13:30,1,1,1,1,5\n")
    with pytest.raises(PanelInputError, match=r"AAA\.csv: line 3, column 'Date': '2021-01-01 13:30' "
                                              r"has a time of day"):
        build_panel(cfg_for(f"panel.path={q}"))


def test_negative_volume_and_empty_ticker_refused(tmp_path):
    p = _write(tmp_path, "AAA.csv", "Date,Open,High,Low,Close,Volume\n2021-01-01,1,1,1,1,-5\n")
    with pytest.raises(PanelInputError, match=r"AAA\.csv: line 2, column 'Volume': -5\.0: negative"):
        build_panel(cfg_for(f"panel.path={p}"))
    q = _write(tmp_path, "long.csv", "symbol,time,o,h,l,c,vol\nSOL,20210101,1,1,1,1,1\n,20210102,1,1,1,1,1\n")
    with pytest.raises(PanelInputError, match=r"long\.csv: line 3, column 'symbol': empty ticker"):
        build_panel(cfg_for(f"panel.path={q}", *LONG))


def test_ticker_pattern_must_match(tmp_path):
    (tmp_path / "klines").mkdir()
    (tmp_path / "klines" / "btc_daily.csv").write_text(
        (FIX / "binance" / "ETHUSDT-1d-2021-01.csv").read_text())
    with pytest.raises(PanelInputError, match=r"btc_daily\.csv: file name: generic\.ticker_pattern"):
        build_panel(cfg_for(*BINANCE[1:], f"panel.path={tmp_path / 'klines'}"))


# --------------------------------------------------------------------------------------------------
# Settings refused when the config loads


@pytest.mark.parametrize("sets, message", [
    (["panel.shrcd=[10]"], r"'panel\.shrcd' \[10\] is a CRSP filter; panel\.source generic"),
    (["panel.exchcd=[1]"], r"'panel\.exchcd' \[1\] is a CRSP filter"),
    (["panel.common_only=true"], r"'panel\.common_only' is true.*set panel\.common_only: false"),
    (["generic.ticker_pattern=^[A-Z]+-"], r"needs a group"),
    (["generic.ticker_pattern=(["], r"is not a regular expression"),
    (["generic.columns={date: time, open: o, high: h, low: l, close: c, volume: vol, ticker: symbol}",
      "generic.ticker_pattern=^(.+)-"], r"both set"),
    (["generic.header=[a, b]"], r"'generic\.header' \['a', 'b'\] lacks the column\(s\)"),
    (["generic.columns.high=open"], r"several fields to the same column \['open'\]"),
    (["generic.date_format=excel"], r"'generic\.date_format' is 'excel'"),
    (["generic.columns.adj=Adj"], r"unknown config key 'generic\.columns\.adj'"),
])
def test_config_refuses(sets, message):
    with pytest.raises(ConfigError, match=message):
        cfg_for(f"panel.path={FIX / 'per_ticker'}", *sets)


def test_the_24_7_synthetic_market_round_trips_through_a_long_file(tmp_path):
    """The synthetic market in 24/7 mode written as one long CSV (ticker, date, OHLCV) and read
    back as a generic source: the same records (less each stock's first, which has no previous
    close in the file), the same prices and returns; market cap becomes the proxy."""
    from pipeline.panel.synthetic import generate_market

    syn = load_config(None, ["synthetic.n_stocks=4", "synthetic.end=1993-03-31", "synthetic.calendar=daily"])
    panel, stocks = generate_market(syn.synthetic)
    long = panel.merge(stocks[["stock_id", "ticker"]], on="stock_id")
    long = long[["ticker", "date", "open", "high", "low", "close", "volume"]]
    long["date"] = long.date.dt.strftime("%Y-%m-%d")
    long.sample(frac=1.0, random_state=0).to_csv(tmp_path / "market.csv", index=False)  # any row order
    cfg = load_config(None, ["panel.source=generic", "panel.common_only=false",
                             f"panel.path={tmp_path / 'market.csv'}", "panel.start=1992-06-01",
                             "panel.end=1993-03-31", "images.end_year=1993", "generic.columns.ticker=ticker"])
    df, got_stocks, meta = build_panel(cfg)
    first = panel.groupby("stock_id").head(1).index
    want = panel.drop(index=first).reset_index(drop=True)
    assert got_stocks.ticker.tolist() == stocks.ticker.tolist()
    assert (pd.DatetimeIndex(df.date).day_of_week >= 5).sum() == (pd.DatetimeIndex(want.date).day_of_week >= 5).sum() > 0
    pd.testing.assert_frame_equal(df[["stock_id", "date", "open", "high", "low", "close"]],
                                  want[["stock_id", "date", "open", "high", "low", "close"]])
    np.testing.assert_allclose(df.ret, want.ret, rtol=1e-12)
    assert meta.counts["weekend_rows"] == 0 and meta.counts["ohlc_repaired_rows"] == 0
