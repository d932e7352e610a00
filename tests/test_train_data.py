"""Training data: label selection, leakage guard, index, normalisation, memmap batches."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline.images.store import ImageSet  # noqa: E402
from pipeline.paths import images_dir  # noqa: E402
from pipeline.train.data import (MemmapImages, build_index, compute_norm, fixed_cutoff_keep,  # noqa: E402
                                 insample_index, label_window_end, leakage_keep, norm_for_year,
                                 normalise, select_labels, split_member, stats_from_histogram)


def test_select_labels_hand_table():
    t = pd.DataFrame({"label_month": np.array([1, 0, 2, 1, 2], dtype=np.int8),
                      "ewma_vol": [1e-4, 2e-4, 3e-4, 0.0, 0.0]})
    keep, lab = select_labels(t, "month")
    assert keep.tolist() == [True, True, False, False, False]
    assert lab[keep].tolist() == [1, 0]
    keep, lab = select_labels(t, "month", reproduce_nan_as_down=True)
    assert keep.tolist() == [True, True, True, False, False]
    assert lab[keep].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="label_week"):
        select_labels(t, "week")
    bad = t.assign(label_month=np.array([1, 3, 0, 0, 0], dtype=np.int8))
    with pytest.raises(ValueError, match="row 1: label 3"):
        select_labels(bad, "month")


def _period_ends(trading_days: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """Last trading day of each calendar week (Mon-Sun) / month / quarter."""
    s = pd.Series(trading_days, index=trading_days)
    key = {"week": trading_days.to_period("W-SUN"), "month": trading_days.to_period("M"),
           "quarter": trading_days.to_period("Q")}[freq]
    return s.groupby(key).max().to_numpy().astype("datetime64[D]")


NYSE_HOLIDAYS = ["1998-12-25", "1999-01-01", "1999-12-24", "2000-01-17", "2000-12-25", "2001-01-01",
                 "1999-11-25", "2000-11-23", "1999-07-05", "2000-07-04", "1999-09-06", "2000-09-04"]


@pytest.mark.parametrize("last_year", [1999, 2000])
@pytest.mark.parametrize("horizon,freq", [(5, "week"), (20, "month"), (60, "quarter")])
def test_leakage_generic_rule_equals_fixed_cutoffs_on_the_nyse_calendar(last_year, horizon, freq):
    days = pd.bdate_range("1998-01-01", "2001-12-31")
    days = days[~days.isin(pd.to_datetime(NYSE_HOLIDAYS))]
    ends = _period_ends(days, freq)
    insample = ends[ends <= np.datetime64(f"{last_year}-12-31")]
    generic = leakage_keep(insample, freq, np.datetime64(f"{last_year}-12-31"), ends)
    fixed = fixed_cutoff_keep(insample, horizon, last_year)
    assert (generic == fixed).all()
    assert (~generic).sum() >= 1 and generic[:-3].all()


@pytest.mark.parametrize("horizon,freq", [(20, "month"), (60, "quarter"), (5, "week")])
def test_leakage_rules_on_weekday_calendars_1990_2030(horizon, freq):
    """Month/quarter: identical every year. Week: the fixed Dec-24 rule never keeps an image the
    generic rule drops; it also drops a Dec 24-31 image whose next week end is still in the year
    (e.g. Fri 1993-12-24 -> Fri 1993-12-31 on a calendar without the Christmas holiday)."""
    days = pd.bdate_range("1990-01-01", "2031-12-31")  # Mon-Fri, no holidays
    ends = _period_ends(days, freq)
    for last_year in range(1990, 2031):
        last = np.datetime64(f"{last_year}-12-31")
        ins = ends[(ends <= last) & (ends >= np.datetime64(f"{last_year}-01-01"))]
        g = leakage_keep(ins, freq, last, ends)
        f = fixed_cutoff_keep(ins, horizon, last_year)
        if freq != "week":
            assert (g == f).all(), last_year
        else:
            assert not (f & ~g).any(), last_year
            extra = ins[g & ~f]
            assert (extra >= np.datetime64(f"{last_year}-12-24")).all()
            assert (label_window_end(extra, "week", ends) <= last).all()


def test_label_window_end_hand_values():
    cal = np.array(["1999-11-30", "1999-12-31", "2000-01-31"], dtype="datetime64[D]")
    d = np.array(["1999-11-30", "1999-12-31", "2000-01-31"], dtype="datetime64[D]")
    end = label_window_end(d, "month", cal)
    assert end[:2].tolist() == [np.datetime64("1999-12-31"), np.datetime64("2000-01-31")]
    assert np.isnat(end[2])
    # Records: 20 business days after Wed 1999-12-01 is Wed 1999-12-29; after Dec 3 (Fri): Dec 31.
    rec = label_window_end(np.array(["1999-12-01", "1999-12-03", "1999-12-06"], dtype="datetime64[D]"), "20d")
    assert rec.tolist() == [np.datetime64("1999-12-29"), np.datetime64("1999-12-31"),
                            np.datetime64("2000-01-03")]
    keep = leakage_keep(np.array(["1999-12-01", "1999-12-06"], dtype="datetime64[D]"), "20d",
                        np.datetime64("1999-12-31"))
    assert keep.tolist() == [True, False]
    with pytest.raises(ValueError, match="calendar"):
        label_window_end(d, "week")


def test_build_index_drops_missing_zero_vol_and_leakage(tmp_path):
    cfg = make_config(tmp_path)
    build_image_set(cfg, n_stocks=3)
    s = ImageSet(images_dir(cfg, "I5/week"))
    idx = build_index(s, [1995, 1996], horizon=5)
    n = 0
    for y in (1995, 1996):
        lab = s.labels(y)
        rows = idx.rows[idx.years == y]
        sel = lab.iloc[rows]
        assert (sel["label_week"] != 2).all() and (sel["ewma_vol"] != 0).all()
        assert (idx.labels[idx.years == y] == sel["label_week"].to_numpy()).all()
        expect = (lab["label_week"] != 2) & (lab["ewma_vol"] != 0)
        if y == 1996:  # the last in-sample week end (Fri 1996-12-27) has its label in 1997
            assert pd.Timestamp("1996-12-27") in set(lab["date"])
            expect &= lab["date"] < pd.Timestamp("1996-12-24")
        assert rows.tolist() == np.flatnonzero(expect.to_numpy()).tolist()
        n += int(expect.sum())
    assert len(idx) == n == idx.info["n"]
    assert idx.info["dropped_leakage"] >= 1 and idx.info["dropped_label_missing"] >= 1
    # reproduce_nan_as_down keeps label-2 rows as "down"
    idx2 = build_index(s, [1995, 1996], horizon=5, reproduce_nan_as_down=True)
    assert len(idx2) == len(idx) + idx2.info["missing_as_down"] and idx2.info["missing_as_down"] > 0
    # deterministic subsample
    a = build_index(s, [1995, 1996], horizon=5, max_images=50, seed=3)
    b = build_index(s, [1995, 1996], horizon=5, max_images=50, seed=3)
    c = build_index(s, [1995, 1996], horizon=5, max_images=50, seed=4)
    assert len(a) == 50 and (a.rows == b.rows).all() and (a.years == b.years).all()
    assert not ((a.rows == c.rows).all() and (a.years == c.years).all())


def test_insample_index_uses_split_years(tmp_path):
    cfg = make_config(tmp_path, insample_years=[1996, 1996], test_years=[1997, 1997])
    build_image_set(cfg, n_stocks=2)
    _, idx = insample_index(cfg)
    assert set(np.unique(idx.years)) == {1996}
    cfg = make_config(tmp_path, insample_years=[1980, 1981], test_years=[1997, 1997])
    with pytest.raises(ValueError, match="none in the in-sample range 1980-1981"):
        insample_index(cfg)


def test_split_member_sizes_and_seeds():
    tr, va = split_member(10, 0.3, seed=1)
    assert len(tr) == 7 and len(va) == 3 and set(tr) | set(va) == set(range(10)) and not set(tr) & set(va)
    tr2, _ = split_member(10, 0.3, seed=1)
    tr3, _ = split_member(10, 0.3, seed=2)
    assert (tr == tr2).all() and not (tr == tr3).all()
    assert len(split_member(1001, 0.3, 0)[0]) == 700


def test_normalise_hand_values():
    img = np.array([[[0, 255], [51, 255]]], dtype=np.uint8)
    x = normalise(img, mean=0.5, std=0.25)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor([[-2.0, 2.0], [-1.2, 2.0]]))
    with pytest.raises(ValueError, match="uint8"):
        normalise(img.astype(np.float32), 0.5, 0.25)
    # stats of {0, 0, 0, 255}: mean 0.25, std sqrt(0.1875)
    h = np.zeros(256, dtype=np.int64)
    h[0], h[255] = 3, 1
    m, s = stats_from_histogram(h)
    assert m == pytest.approx(0.25) and s == pytest.approx(np.sqrt(0.1875))


def test_compute_norm_matches_numpy_and_memmap_batches(tmp_path):
    cfg = make_config(tmp_path)
    build_image_set(cfg, n_stocks=2)
    s = ImageSet(images_dir(cfg, "I5/week"))
    idx = build_index(s, [1995, 1996], horizon=5)
    norm = compute_norm(s, idx)
    pix = np.concatenate([s.images(y)[idx.rows[idx.years == y]] for y in (1995, 1996)]) / 255.0
    assert norm["mean"] == pytest.approx(pix.mean(), rel=1e-12)
    assert norm["std"] == pytest.approx(pix.std(), rel=1e-12)
    ds = MemmapImages(s.directory, idx, norm)
    pos = [len(idx) - 1, 0, 5, len(idx) // 2 + 3]  # mixes both years, out of order
    x, y = ds.__getitems__(pos)
    raw = np.stack([s.images(int(idx.years[p]))[idx.rows[p]] for p in pos])
    assert torch.equal(x, normalise(raw, norm["mean"], norm["std"]))
    assert y.tolist() == idx.labels[pos].tolist() and y.dtype == torch.int64
    assert set(np.unique(idx.labels)) <= {0, 1}
    # per-year statistics (reference parity): each year's first images, test years included
    py = compute_norm(s, idx, "per_year_first50k")
    assert set(py["per_year"]) == {"1995", "1996", "1997"}
    assert py["per_year"]["1997"]["mean"] == pytest.approx((s.images(1997) / 255.0).mean())
    assert norm_for_year(py, 1997) == (py["per_year"]["1997"]["mean"], py["per_year"]["1997"]["std"])
    assert norm_for_year(norm, 1997) == (norm["mean"], norm["std"])
