"""The image stage end to end on a tiny hand-made panel: counts, bytes, labels, resume, refusal."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.images import build
from pipeline.images.executor import LocalExecutor
from pipeline.images.render import render_windows
from pipeline.images.store import ImageSet
from pipeline.io import write_parquet
from pipeline.io import mark_done, read_json
from pipeline.panel.build import panel_settings_hash
from pipeline.panel.store import PanelContractError, PanelMeta, write_panel


def tiny_panel(seed=0):
    """Business days 2000-10-02..2002-01-31 (no holidays). Stocks:
    10 every day; 20 every day but 2001-03-30 (a month end -> R0); 30 from 2001-06-15
    (June end: 11 records -> R1; July end: 33 records -> image without MA); 40 ends 2000-12-15."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2000-10-02", "2002-01-31")
    frames = []
    for sid, d in [(10, days), (20, days[days != "2001-03-30"]), (30, days[days >= "2001-06-15"]),
                   (40, days[days <= "2000-12-15"])]:
        n = len(d)
        ret = rng.normal(0.0005, 0.02, n)
        ret[0] = 0.0
        close = 20 * np.cumprod(1 + ret)
        spread = np.abs(rng.normal(0, 0.01, n)) * close
        vol = rng.integers(1000, 5000, n).astype(float)
        vol[rng.random(n) < 0.05] = np.nan
        frames.append(pd.DataFrame({
            "stock_id": np.int32(sid), "date": d, "open": close * (1 + rng.normal(0, 0.004, n)),
            "high": close + spread, "low": close - spread, "close": close, "volume": vol,
            "ret": ret, "mktcap": close * 1e3, "exchange": "NYSE", "source": "test"}))
    df = pd.concat(frames, ignore_index=True)
    df["open"] = df[["open", "high"]].min(axis=1).clip(lower=df["low"])
    return df


def write_tiny(path, df=None):
    df = tiny_panel() if df is None else df
    stocks = pd.DataFrame({"stock_id": [10, 20, 30, 40], "ticker": list("ABCD"), "exchange": "NYSE"})
    write_panel(path, df, stocks, PanelMeta(source="test", mktcap_is_proxy=True,
                                            mktcap_units="$"))
    mark_done(path, panel_settings_hash(load_config(None, [])))  # finished, default panel settings
    return df


def cfg_for(tmp_path, **extra):
    sets = [f"images.{k}={v}" for k, v in {"start_year": 2001, "end_year": 2001,
                                           "stocks_per_shard": 2, "workers": 1, **extra}.items()]
    return load_config(None, [f"data_dir={tmp_path}", "name=t", *sets])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("img")
    df = write_tiny(tmp / "t" / "panel")
    cfg = cfg_for(tmp)
    from pipeline.images.__main__ import main

    main(argv=["--set", f"data_dir={tmp}", "--set", "name=t",
                                    "--set", "images.start_year=2001",
                                    "--set", "images.end_year=2001",
                                    "--set", "images.stocks_per_shard=2",
                                    "--set", "images.workers=1",
                                    "--set", "images.contact_sheet_samples=5"])
    return tmp, df, cfg, tmp / "t" / "images" / "I20_month"


def test_counts_and_rejections(built):
    _, _, _, out = built
    s = ImageSet(out)
    assert s.years == [2001]
    lab = s.labels(2001)
    assert lab.groupby("stock_id").size().to_dict() == {10: 12, 20: 11, 30: 6}
    assert s.images(2001).shape == (29, 64, 60)
    rej = s.rejections()["2001"]
    assert rej["R0_no_record_on_date"] == 1 and rej["R1_short_history"] == 1
    assert sum(rej.values()) == 2
    assert pd.Timestamp("2001-03-30") not in set(lab.loc[lab.stock_id == 20, "date"])
    key = list(zip(lab.stock_id, lab.date))
    assert key == sorted(key)
    assert (out / "config.yaml").exists() and (out / "_DONE.json").exists()
    assert not (out / "_parts").exists()
    assert (out / "contact_sheet.png").stat().st_size > 1000


def test_images_are_the_renderers_on_the_right_blocks(built):
    _, df, _, out = built
    s = ImageSet(out)
    lab = s.labels(2001)
    cols = ["open", "high", "low", "close", "volume", "ret"]
    for sid, date, n_real in [(10, "2001-03-30", 40), (30, "2001-07-31", 33), (20, "2001-12-31", 40)]:
        hist = df[(df.stock_id == sid) & (df.date <= date)].tail(40)[cols].to_numpy()
        assert len(hist) == n_real
        block = np.full((1, 40, 6), np.nan)
        block[0, 40 - n_real:] = hist
        img, status = render_windows(block, np.array([n_real]), 20)
        assert status[0] == -1
        i = int(np.flatnonzero((lab.stock_id == sid) & (lab.date == pd.Timestamp(date)))[0])
        np.testing.assert_array_equal(s.images(2001)[i], img[0])


def test_labels_against_direct_computation(built):
    _, df, _, out = built
    lab = ImageSet(out).labels(2001).set_index(["stock_id", "date"])
    a = df[df.stock_id == 10].set_index("date")["ret"]
    # Jan 31 -> Feb 28 2001 (next month end), and Dec 31 2001 -> Jan 31 2002 (crosses the year)
    jan = lab.loc[(10, pd.Timestamp("2001-01-31"))]
    assert jan.ret_month == pytest.approx((1 + a["2001-02-01":"2001-02-28"]).prod() - 1, rel=1e-11)
    after = a[a.index > "2001-01-31"]
    assert jan.ret_20d == pytest.approx((1 + after.iloc[:20]).prod() - 1, rel=1e-11)
    dec = lab.loc[(10, pd.Timestamp("2001-12-31"))]
    assert dec.ret_month == pytest.approx((1 + a["2002-01-01":"2002-01-31"]).prod() - 1, rel=1e-11)
    assert dec.ret_60d != dec.ret_60d  # only 23 records after Dec 31: NaN
    assert dec.label_60d == 2
    ev = (a ** 2).ewm(alpha=0.05, adjust=True).mean().shift(1)
    assert jan.ewma_vol == pytest.approx(ev["2001-01-31"], rel=1e-12)
    assert jan.mktcap == df[(df.stock_id == 10) & (df.date == "2001-01-31")].mktcap.iloc[0]
    # stock 20 lacks the March 30 month end: its February image has no strict ret_month
    feb = lab.loc[(20, pd.Timestamp("2001-02-28"))]
    assert np.isnan(feb.ret_month) and feb.label_month == 2


PROVENANCE_KEYS = {"stage", "image_set", "inputs", "commit", "uncommitted_changes", "python", "torch",
                   "numpy", "pandas", "platform", "processor", "cores", "cuda_device"}


def test_provenance_beside_the_set(built):
    tmp, _, _, out = built
    prov = ImageSet(out).provenance()
    assert set(prov) == PROVENANCE_KEYS
    assert prov["stage"] == "images" and prov["image_set"] == "I20/month"
    panel = tmp / "t" / "panel"
    assert prov["inputs"] == {"panel": str(panel.resolve()),
                              "panel_hash": read_json(panel / "_DONE.json")["hash"]}
    assert isinstance(prov["cores"], int) and prov["python"].count(".") == 2


def test_second_build_is_skipped(built):
    tmp, _, cfg, out = built
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert "provenance.json" in before
    build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_parts_resume(tmp_path):
    write_tiny(tmp_path / "t" / "panel")
    cfg = cfg_for(tmp_path)
    out = tmp_path / "t" / "images" / "I20_month"
    settings = build.settings_for(cfg, "I20/month", tmp_path / "t" / "panel")
    from pipeline.config import section_hash

    keys = build.read_panel_keys(tmp_path / "t" / "panel")
    plan = build.plan_image_set(keys, tmp_path / "t" / "panel", out / "_parts", 20, "month", 2001,
                                2001, "strict", 2, True, True, section_hash(settings))
    assert len(plan.tasks) == 2  # stocks 10, 20 | 30
    first = build.run_part(plan.tasks[0])
    year_file = out / "_parts" / "images_2001.npy"
    marker = out / "_parts" / "2001" / "shard_0000.json"
    stamps = year_file.stat().st_mtime_ns, marker.stat().st_mtime_ns
    assert build.run_part(plan.tasks[0]) == first
    assert (year_file.stat().st_mtime_ns, marker.stat().st_mtime_ns) == stamps  # done part skipped
    build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    assert ImageSet(out).count(2001) == 29
    # New settings rebuild the set in place; the 2001 files of the old build are removed.
    build.build_image_set(cfg_for(tmp_path, start_year=2000, end_year=2000), "I20/month",
                          LocalExecutor(1))
    s = ImageSet(out)
    assert s.years == [2000] and not (out / "labels_2001.parquet").exists()
    # Oct/Nov/Dec 2000 for stocks 10 and 20; stock 40 stops on Dec 15 (not listed on Dec 29)
    assert s.labels(2000).groupby("stock_id").size().to_dict() == {10: 3, 20: 3, 40: 2}
    assert list(s.rejections()) == ["2000"]


def test_refuses_panels_violating_the_contract(tmp_path):
    df = write_tiny(tmp_path / "t" / "panel")
    cfg = cfg_for(tmp_path)
    f = tmp_path / "t" / "panel" / "year=2001" / "part.parquet"
    part = pd.read_parquet(f)
    write_parquet(f, pd.concat([part.iloc[:5], part.iloc[4:]], ignore_index=True))
    with pytest.raises(PanelContractError, match=r"year=2001.*duplicate \(stock_id, date\) at row 5"):
        build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    part2 = part.copy()
    part2.loc[7, "ret"] = np.nan
    write_parquet(f, part2)
    with pytest.raises(PanelContractError, match="missing ret at row 7"):
        build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    write_parquet(f, part.drop(columns=["mktcap"]))
    with pytest.raises(PanelContractError, match=r"year=2001.*missing columns \['mktcap'\]"):
        build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    part3 = part.copy()
    part3.loc[3, "low"] = 0.0
    write_parquet(f, part3)
    with pytest.raises(PanelContractError, match="non-positive low"):
        build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    assert len(df)


def test_panel_keys_read_in_parallel_equal_the_serial_read_and_name_the_first_bad_year(tmp_path):
    panel = tmp_path / "t" / "panel"
    write_tiny(panel)
    one, two = build.read_panel_keys(panel, threads=1), build.read_panel_keys(panel, threads=2)
    for f in ("stock_ids", "offsets", "days", "ret", "mktcap", "calendar"):
        a, b = getattr(one, f), getattr(two, f)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f
    years = sorted(int(p.name.split("=")[1]) for p in panel.glob("year=*"))
    assert len(years) >= 2
    for y, bad in zip(years[:2], ("duplicate", "columns")):
        f = panel / f"year={y}" / "part.parquet"
        part = pd.read_parquet(f)
        write_parquet(f, pd.concat([part.iloc[:3], part.iloc[2:]], ignore_index=True)
                      if bad == "duplicate" else part.drop(columns=["mktcap"]))
    # Both years are bad; the error is the earlier year's, as a read year by year would give.
    with pytest.raises(PanelContractError, match=rf"year={years[0]}.*duplicate"):
        build.read_panel_keys(panel, threads=2)


def test_contact_sheet_is_redrawn_only_when_the_set_or_its_settings_change(built):
    import os

    from pipeline.images.contact_sheet import update_contact_sheet

    _, _, _, out = built
    sheet = out / "contact_sheet.png"
    os.utime(sheet, ns=(1, 1))  # older than the set: times do not matter, hashes do
    update_contact_sheet(out, 5, title="t I20/month")
    assert sheet.stat().st_mtime_ns == 1  # the stage's own sheet (same set, same settings): kept
    update_contact_sheet(out, 6, title="t I20/month")
    assert sheet.stat().st_mtime_ns > 1  # another sample size: drawn again


def test_contact_sheet_samples(built):
    from pipeline.images.contact_sheet import sample_images

    _, _, _, out = built
    s = ImageSet(out)
    imgs, sids, dates = sample_images(s, 5, seed=3)
    assert imgs.shape == (5, 64, 60)
    lab = s.labels(2001)
    for img, sid, d in zip(imgs, sids, dates):
        i = int(np.flatnonzero((lab.stock_id == sid) & (lab.date == d))[0])
        np.testing.assert_array_equal(s.images(2001)[i], img)
    assert len(sample_images(s, 100)[0]) == 29


def test_i60_quarterly_next_available(tmp_path):
    df = write_tiny(tmp_path / "t" / "panel")
    cfg = cfg_for(tmp_path, period_ret_mode="next_available")
    out = build.build_image_set(cfg, "I60/quarter", LocalExecutor(1))
    s = ImageSet(out)
    lab = s.labels(2001)
    assert s.images(2001).shape == (9, 96, 180)
    assert lab.groupby("stock_id").size().to_dict() == {10: 4, 20: 3, 30: 2}
    rej = s.rejections()["2001"]
    assert (rej["R0_no_record_on_date"], rej["R1_short_history"]) == (1, 1)
    # stock 20 at Dec 29 2000 is outside the years; at Jun 29 2001 its quarter return runs to
    # Sep 28; the last quarter end (Dec 31) has no next one: the calendar stops in January.
    a = df[df.stock_id == 20].set_index("date")["ret"]
    jun = lab[(lab.stock_id == 20) & (lab.date == "2001-06-29")].iloc[0]
    assert jun.ret_quarter == pytest.approx((1 + a["2001-06-30":"2001-09-28"]).prod() - 1,
                                            rel=1e-11)
    assert lab.loc[lab.date == "2001-12-31", "ret_quarter"].isna().all()


# --------------------------------------------------------------------------------------------------
# Year files written in place by the parts; gaps left by renderer rejections; resume


def direct_images(df, lab, window=20):
    """The renderer's image of every label row, from the panel frame directly (no build code)."""
    cols = ["open", "high", "low", "close", "volume", "ret"]
    out = []
    for sid, date in zip(lab.stock_id, lab.date):
        hist = df[(df.stock_id == sid) & (df.date <= date)].tail(2 * window)[cols].to_numpy()
        block = np.full((1, 2 * window, 6), np.nan)
        block[0, 2 * window - len(hist):] = hist
        img, status = render_windows(block, np.array([len(hist)]), window)
        assert status[0] == -1, (sid, date)
        out.append(img[0])
    return np.stack(out)


def panel_with_renderer_rejections():
    """tiny_panel with a missing close on the first block row of two month-end windows (R2):
    stock 10's 2001-05-31 (shard 0) and stock 30's 2001-11-30 (shard 1, stocks_per_shard=2)."""
    df = tiny_panel()
    for sid, date in [(10, "2001-05-31"), (30, "2001-11-30")]:
        rows = np.flatnonzero((df.stock_id == sid) & (df.date <= date))
        df.loc[rows[-40], "close"] = np.nan
    return df


def test_renderer_rejections_leave_no_gap(tmp_path):
    df = write_tiny(tmp_path / "t" / "panel", panel_with_renderer_rejections())
    out = build.build_image_set(cfg_for(tmp_path), "I20/month", LocalExecutor(1))
    s = ImageSet(out)
    lab = s.labels(2001)
    rej = s.rejections()["2001"]
    assert (rej["R0_no_record_on_date"], rej["R1_short_history"],
            rej["R2_bad_first_raw_close"]) == (1, 1, 2)
    assert lab.groupby("stock_id").size().to_dict() == {10: 11, 20: 11, 30: 5}
    assert pd.Timestamp("2001-05-31") not in set(lab.loc[lab.stock_id == 10, "date"])
    # The year file had room for 29 images; the two gaps are closed and the header says 27.
    images = s.images(2001)
    assert images.shape == (27, 64, 60)
    np.testing.assert_array_equal(images, direct_images(df, lab))
    assert not (out / "_parts").exists()


def test_same_bytes_for_any_sharding_chaining_and_pool(tmp_path):
    """The artifacts do not depend on how the parts are grouped or where they run."""
    write_tiny(tmp_path / "t" / "panel", panel_with_renderer_rejections())
    outs = []
    for i, (per_shard, workers) in enumerate([(2, 1), (1, 1), (1, 2), (4, 2)]):
        cfg = cfg_for(tmp_path, stocks_per_shard=per_shard, workers=workers)
        out = tmp_path / f"set{i}"
        build.build_image_set(cfg, "I20/month", LocalExecutor(workers),
                              panel_dir=tmp_path / "t" / "panel", out_dir=out)
        outs.append(out)
    for name in ["images_2001.npy", "labels_2001.parquet", "rejections.json"]:
        ref = (outs[0] / name).read_bytes()
        assert all((o / name).read_bytes() == ref for o in outs[1:]), name


def test_chains_group_consecutive_years_of_a_shard():
    t = [build.PartTask(panel_dir="", part_stem=f"{y}/{k}", year_file="", year_slots=0,
                        first_slot=0, year=y, shard=k, window=20, ma=True, volume=True,
                        stock_ids=np.zeros(0, np.int32), read_years=[y], sid=np.zeros(0, np.int32),
                        day=np.zeros(0, np.int64), start_day=np.zeros(0, np.int64),
                        n_hist=np.zeros(0, np.int64), r0=0, r1=0, settings_hash="h")
         for y in range(2000, 2004) for k in range(2 if y < 2002 else 1)]
    # tasks: 2000/0 2000/1 2001/0 2001/1 2002/0 2003/0
    assert build.chains(t, 1) == [[0, 2, 4, 5], [1, 3]]
    assert build.chains(t, 3) == [[0, 2], [4, 5], [1, 3]]
    assert sorted(i for c in build.chains(t, 100) for i in c) == list(range(len(t)))


def test_resume_after_some_parts_and_a_damaged_year_file(tmp_path):
    df = write_tiny(tmp_path / "t" / "panel", panel_with_renderer_rejections())
    cfg = cfg_for(tmp_path, stocks_per_shard=1, start_year=2000, end_year=2001)
    panel = tmp_path / "t" / "panel"
    out = tmp_path / "t" / "images" / "I20_month"
    h = build.image_set_hash(cfg, "I20/month", panel)
    keys = build.read_panel_keys(panel)
    plan = build.plan_image_set(keys, panel.resolve(), out.resolve() / "_parts", 20, "month", 2000,
                                2001, "strict", 1, True, True, h)
    build._prepare_parts(out.resolve() / "_parts", plan, h)
    # An interrupted run: one chain done (markers of 2000 and 2001 of shard 0), the rest not.
    first = build.chains(plan.tasks, 1)[0]
    build.run_parts([plan.tasks[i] for i in first])
    done = sorted((out / "_parts").rglob("shard_*.json"))
    assert len(done) == len(first) == 2
    year_2000 = out / "_parts" / "images_2000.npy"
    with open(year_2000, "ab") as f:  # damaged: the 2000 file is no longer of its planned size
        f.write(b"x")
    build.build_image_set(cfg, "I20/month", LocalExecutor(1))
    s = ImageSet(out)
    for y in (2000, 2001):
        lab = s.labels(y)
        np.testing.assert_array_equal(s.images(y), direct_images(df, lab))
    assert s.images(2001).shape[0] == 27 and not (out / "_parts").exists()


def test_year_file_is_moved_into_place_not_copied(tmp_path):
    """Without renderer rejections the parts fill every slot (R1 windows get none): the merge
    renames the year file the parts wrote, the same inode, and copies no image."""
    write_tiny(tmp_path / "t" / "panel")
    cfg = cfg_for(tmp_path)
    panel = tmp_path / "t" / "panel"
    out = tmp_path / "t" / "images" / "I20_month"
    h = build.image_set_hash(cfg, "I20/month", panel)
    plan = build.plan_image_set(build.read_panel_keys(panel), panel.resolve(),
                                out.resolve() / "_parts", 20, "month", 2001, 2001, "strict", 2,
                                True, True, h)
    assert sum(t.r1 for t in plan.tasks) == 1 and plan.tasks[0].year_slots == 29
    build._prepare_parts(out.resolve() / "_parts", plan, h)
    for c in build.chains(plan.tasks, 1):
        build.run_parts([plan.tasks[i] for i in c])
    inode = (out / "_parts" / "images_2001.npy").stat().st_ino
    build.build_image_set(cfg, "I20/month", LocalExecutor(1))  # resumes: every part is done
    assert (out / "images_2001.npy").stat().st_ino == inode
    assert ImageSet(out).images(2001).shape == (29, 64, 60)
