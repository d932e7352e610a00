"""CRSP adapter (METHOD 4.1) on a WRDS-style CSV fixture and the same rows as Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.panel.build import build_panel
from pipeline.panel.store import check_contract

CSV = Path(__file__).parent / "fixtures" / "panel" / "crsp" / "dsf.csv"

EXPECTED_COUNTS = {
    "input_rows": 11, "before_start": 1, "after_end": 0, "shrcd_filtered": 1,
    "exchcd_filtered": 1, "ret_code_A": 0, "ret_code_B": 1, "ret_code_C": 1, "ret_code_D": 0,
    "ret_code_E": 0, "ret_code_.": 1, "ret_empty": 0, "ret_sentinel_-66": 1,
    "ret_sentinel_-77": 0, "ret_sentinel_-88": 0, "ret_sentinel_-99": 0, "negative_prc_abs": 1,
    "negative_openprc_abs_with_trade_prc": 0, "negative_askhi_abs_with_trade_prc": 0,
    "negative_bidlo_abs_with_trade_prc": 0, "high_below_low_kept": 0,
    "zero_openprc_missing": 1, "zero_askhi_missing": 1, "zero_bidlo_missing": 1,
    "zero_prc_missing": 1, "vol_missing": 2, "stocks_in_panel": 2, "output_rows": 4,
}


def crsp_cfg(path: Path, *sets: str):
    return load_config(None, ["panel.source=crsp", f"panel.path={path}",
                              "panel.start=1993-01-01", "panel.end=1993-12-31", *sets])


def check_expected(df: pd.DataFrame, stocks: pd.DataFrame) -> None:
    check_contract(df)
    assert df.stock_id.tolist() == [10001, 10001, 10002, 10002]  # stock_id = PERMNO
    assert df.date.tolist() == [pd.Timestamp(x) for x in
                                ("1993-01-04", "1993-01-05", "1993-01-04", "1993-01-06")]
    np.testing.assert_array_equal(df.ret, [0.01, 0.02, -0.05, 0.0])  # RET as given (total)
    np.testing.assert_array_equal(df.close, [10.0, 10.2, 20.5, np.nan])  # |PRC|, 0 -> missing
    np.testing.assert_array_equal(df.open, [9.8, np.nan, 20.2, np.nan])  # empty OPENPRC
    np.testing.assert_array_equal(df.high, [10.5, 10.4, 21.0, np.nan])
    np.testing.assert_array_equal(df.low, [9.5, 9.6, 20.0, np.nan])
    np.testing.assert_array_equal(df.volume, [1000, np.nan, 300, np.nan])  # VOL 0 and -99
    # |PRC| * SHROUT in $ thousands: 10*500, 10.2*500, 20.5*1000, missing price -> missing cap.
    np.testing.assert_allclose(df.mktcap, [5000, 5100, 20500, np.nan], rtol=1e-15)
    assert df.exchange.astype(str).tolist() == ["NYSE", "NYSE", "NASDAQ", "NASDAQ"]
    assert stocks.to_dict("list") == {"stock_id": [10001, 10002], "ticker": ["AAA", "BBB"],
                                      "exchange": ["NYSE", "NASDAQ"]}


def test_crsp_csv_exact():
    df, stocks, meta = build_panel(crsp_cfg(CSV))
    assert meta.counts == EXPECTED_COUNTS
    assert not meta.mktcap_is_proxy and meta.mktcap_units == "$ thousands"
    assert meta.weighting_label == "value-weighted"
    check_expected(df, stocks)


def test_crsp_parquet_lowercase_names(tmp_path):
    raw = pd.read_csv(CSV, dtype=str, keep_default_na=False)
    raw.columns = [c.lower() for c in raw.columns]  # names are case-insensitive
    p = tmp_path / "dsf.parquet"
    raw.to_parquet(p, index=False)
    df, stocks, meta = build_panel(crsp_cfg(p))
    assert meta.counts == EXPECTED_COUNTS
    check_expected(df, stocks)


def test_crsp_filters_off_keep_everything_with_codes():
    # Empty filter lists disable the SHRCD/EXCHCD filters; EXCHCD 4 gets a named label.
    df, stocks, meta = build_panel(crsp_cfg(CSV, "panel.shrcd=[]", "panel.exchcd=[]"))
    assert "shrcd_filtered" not in meta.counts and meta.counts["output_rows"] == 6
    assert stocks.stock_id.tolist() == [10001, 10002, 10003, 10004]
    assert stocks.exchange.tolist() == ["NYSE", "NASDAQ", "NYSE", "EXCHCD=4"]
    np.testing.assert_allclose(df[df.stock_id == 10004].mktcap, [7.5 * 300])
