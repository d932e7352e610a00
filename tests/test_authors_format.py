"""The authors' .dat + .feather files (METHOD 4.5): names, both label variants, errors, round trip."""

import logging
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from pipeline.config import load_config
from pipeline.io import StaleInputError
from pipeline.images.authors import (check_authors_current, export_authors, find_authors_files,
                                     import_authors, read_authors_labels)
from pipeline.images.store import LABEL_TABLE_COLUMNS, ImageSet, write_year
from pipeline.io import mark_done
from pipeline.train.loop import check_images_current

RNG = np.random.default_rng(7)


def images(n):
    return (RNG.random((n, 64, 60)) < 0.1).astype(np.uint8) * 255


def write_pair(d, stem, imgs, table):
    d.mkdir(parents=True, exist_ok=True)
    imgs.tofile(d / f"{stem}_images.dat")
    feather.write_feather(pa.Table.from_pandas(table, preserve_index=False),
                          d / f"{stem}_labels_w_delay.feather")


def eight(n=3):
    return pd.DataFrame({
        "Date": pd.to_datetime(["1993-01-29", "1993-02-26", "1993-01-29"][:n]),
        "StockID": [10001, 10001, 10002][:n], "MarketCap": [1.5e5, 1.6e5, 3e3][:n],
        "Ret_5d": [0.0, -0.01, 0.02][:n], "Ret_20d": [0.05, np.nan, -0.3][:n],
        "Ret_60d": [0.1, 0.2, 0.3][:n], "Ret_month": [np.nan, 0.04, -0.2][:n],
        "EWMA_vol": [4e-4, 5e-4, 0.0][:n]})


def test_import_eight_column_variant_with_literal_brackets(tmp_path):
    src = tmp_path / "monthly_20d"
    imgs = images(3)
    write_pair(src, "20d_month_has_vb_[20]_ma_1993", imgs, eight())
    # '[20]' is a glob class: globbing the literal name finds nothing, listing does.
    assert list(src.glob("20d_month_has_vb_[20]_ma_1993_images.dat")) == []
    assert list(find_authors_files(src, 20, "month")) == [1993]
    dst = import_authors(src, tmp_path / "I20_month", 20, "month")
    s = ImageSet(dst)
    assert s.years == [1993]
    np.testing.assert_array_equal(s.images(1993), imgs)
    lab = s.labels(1993)
    assert list(lab.columns) == LABEL_TABLE_COLUMNS
    assert lab.stock_id.tolist() == [10001, 10001, 10002] and lab.stock_id.dtype == np.int32
    assert lab.mktcap.tolist() == [1.5e5, 1.6e5, 3e3]
    assert lab.label_5d.tolist() == [0, 0, 1]  # 0 is "down" (ret <= 0)
    assert lab.label_20d.tolist() == [1, 2, 0]
    assert lab.label_month.tolist() == [2, 1, 0]
    assert lab.ret_week.isna().all() and (lab.label_quarter == 2).all()
    assert lab.ewma_vol.tolist() == [4e-4, 5e-4, 0.0]


def test_unsorted_rows_are_sorted_with_their_images(tmp_path):
    src = tmp_path / "s"
    imgs = images(3)
    t = eight().iloc[[2, 0, 1]]
    write_pair(src, "20d_month_has_vb_[20]_ma_1993", imgs, t)
    s = ImageSet(import_authors(src, tmp_path / "d", 20, "month"))
    lab = s.labels(1993)
    assert list(zip(lab.stock_id, lab.date.dt.strftime("%m"))) == [(10001, "01"), (10001, "02"),
                                                                   (10002, "01")]
    np.testing.assert_array_equal(s.images(1993), imgs[[1, 2, 0]])


def test_thirty_five_column_variant_and_rehosted_names(tmp_path):
    src = tmp_path / "s"
    cols = ["Date", "StockID", "EWMA_vol", "Retx", "Retx_5d", "Retx_20d", "Retx_60d", "Retx_week",
            "Retx_month", "Retx_quarter", "Retx_tstat", "Retx_5d_tstat", "Retx_20d_tstat",
            "Retx_60d_tstat", "MarketCap", "Retx_label", "Retx_5d_label", "Retx_20d_label",
            "Retx_60d_label", "window_size", "next_month_ret_0delay", "next_month_ret_1delay",
            "Ret", "log_ret", "cum_log_ret", "Ret_week", "Ret_month", "Ret_quarter", "Ret_5d",
            "Ret_20d", "Ret_60d", "Ret_65d", "Ret_180d", "Ret_250d", "Ret_260d"]
    t = pd.DataFrame({c: [0.5, -0.5] for c in cols})
    t["Date"] = pd.to_datetime(["1994-03-31", "1994-06-30"])
    t["StockID"] = [7, 7]
    t["Ret_week"], t["Ret_month"], t["Ret_quarter"] = [0.01, -0.01], [0.02, np.nan], [0.0, 0.3]
    assert len(t.columns) == 35
    write_pair(src, "20d_month_has_vb_20_ma_1994", images(2), t)
    # 1995: re-hosted name without the MA length, and no Ret_month (next_month_ret_0delay used)
    t2 = t.drop(columns=["Ret_month"])
    t2["Date"] = pd.to_datetime(["1995-03-31", "1995-06-30"])
    t2["next_month_ret_0delay"] = [-0.07, 0.08]
    write_pair(src, "20d_month_has_vb_ma_1995", images(2), t2)
    write_pair(src, "5d_week_has_vb_[5]_ma_1995", np.zeros((1, 32, 15), np.uint8), t2.iloc[:1])
    s = ImageSet(import_authors(src, tmp_path / "d", 20, "month"))
    assert s.years == [1994, 1995]
    a = s.labels(1994)
    assert a.ret_week.tolist() == [0.01, -0.01] and a.label_week.tolist() == [1, 0]
    assert a.label_month.tolist() == [1, 2] and a.label_quarter.tolist() == [0, 1]
    assert a.ret_5d.tolist() == [0.5, -0.5]
    assert s.labels(1995).ret_month.tolist() == [-0.07, 0.08]


def test_errors(tmp_path):
    src = tmp_path / "s"
    write_pair(src, "20d_month_has_vb_[20]_ma_1993", images(2), eight(3))
    with pytest.raises(ValueError, match="2 images but the label file has 3 rows"):
        import_authors(src, tmp_path / "d", 20, "month")
    (src / "20d_month_has_vb_[20]_ma_1993_images.dat").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="not a multiple"):
        import_authors(src, tmp_path / "d", 20, "month")
    (src / "20d_month_has_vb_[20]_ma_1993_images.dat").unlink()
    with pytest.raises(FileNotFoundError, match="year 1993 has no images file"):
        import_authors(src, tmp_path / "d", 20, "month")
    with pytest.raises(FileNotFoundError, match="no files named like"):
        find_authors_files(src, 60, "quarter")
    feather.write_feather(pa.table({"Date": [1]}), src / "bad.feather")
    with pytest.raises(ValueError, match=r"missing columns \['StockID'\]"):
        read_authors_labels(src / "bad.feather")


def test_export_import_round_trip(tmp_path):
    ours = tmp_path / "I20_month"
    for y, n in [(2000, 4), (2001, 3)]:
        lab = pd.DataFrame({
            "stock_id": np.array([1, 1, 2, 9][:n], np.int32),
            "date": pd.to_datetime([f"{y}-01-31", f"{y}-02-29" if y == 2000 else f"{y}-02-28",
                                    f"{y}-01-31", f"{y}-01-31"][:n]).astype("datetime64[ns]"),
            "mktcap": RNG.random(n), "ewma_vol": RNG.random(n)})
        for c in ["ret_5d", "ret_20d", "ret_60d", "ret_week", "ret_month", "ret_quarter"]:
            r = RNG.normal(size=n)
            r[RNG.random(n) < 0.3] = np.nan
            lab[c] = r
        from pipeline.images.store import labels_from_returns

        for c in ["5d", "20d", "60d", "week", "month", "quarter"]:
            lab[f"label_{c}"] = labels_from_returns(lab[f"ret_{c}"].to_numpy())
        write_year(ours, y, images(n), lab[LABEL_TABLE_COLUMNS])
    mark_done(ours, "x", image_set="I20/month")
    written = export_authors(ours, tmp_path / "theirs")
    assert sorted(p.name for p in written)[0] == "20d_month_has_vb_[20]_ma_2000_images.dat"
    t = feather.read_table(tmp_path / "theirs" / "20d_month_has_vb_[20]_ma_2000_labels_w_delay.feather")
    assert t.column_names[:8] == ["Date", "StockID", "MarketCap", "Ret_5d", "Ret_20d", "Ret_60d",
                                  "Ret_month", "EWMA_vol"]
    back = ImageSet(import_authors(tmp_path / "theirs", tmp_path / "back", 20, "month"))
    a = ImageSet(ours)
    assert back.years == a.years
    for y in a.years:
        np.testing.assert_array_equal(back.images(y), a.images(y))
        pd.testing.assert_frame_equal(back.labels(y), a.labels(y))


def test_an_imported_set_is_refused_once_its_source_files_change(tmp_path, caplog):
    src = tmp_path / "s"
    write_pair(src, "20d_month_has_vb_[20]_ma_1993", images(3), eight())
    dst = import_authors(src, tmp_path / "d", 20, "month")
    check_images_current(load_config(None, []), ImageSet(dst))  # fresh: accepted
    written = (dst / "images_1993.npy").stat().st_mtime_ns
    import_authors(src, dst, 20, "month")  # unchanged files: nothing is rewritten
    assert (dst / "images_1993.npy").stat().st_mtime_ns == written

    changed = eight()
    changed.loc[0, "Ret_month"] = 0.5
    write_pair(src, "20d_month_has_vb_[20]_ma_1993", images(3), changed)
    labels = "20d_month_has_vb_[20]_ma_1993_labels_w_delay.feather"
    with pytest.raises(StaleInputError, match=rf"stale: .*{re.escape(labels)} \(changed\).*import it again"):
        check_images_current(load_config(None, []), ImageSet(dst))
    write_pair(src, "20d_month_has_vb_[20]_ma_1994", images(3), eight())
    with pytest.raises(StaleInputError, match=r"1994_images.dat \(new\)"):
        check_authors_current(dst)
    import_authors(src, dst, 20, "month")  # re-imported: current again, with the new year
    check_authors_current(dst)
    assert ImageSet(dst).years == [1993, 1994]
    assert ImageSet(dst).labels(1993).ret_month.iloc[0] == 0.5

    shutil.rmtree(src)  # the raw files removed after the import: used as imported, with a warning
    with caplog.at_level(logging.WARNING):
        check_authors_current(dst)
    assert "are gone" in caplog.text
