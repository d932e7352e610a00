"""The panel stage: writing, resumability by settings hash, atomicity, the synthetic source."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import load_config, section_hash
from pipeline.io import StaleInputError, is_done, read_json
from pipeline.panel.build import bayes_accuracy_dict, make_panel, panel_settings_hash
from pipeline.panel.clean import PanelInputError
from pipeline.panel.store import read_meta, read_panel, read_stocks
from pipeline.paths import panel_dir

FIX = Path(__file__).parent / "fixtures" / "panel"


def stooq_cfg(tmp_path: Path, *sets: str):
    return load_config(None, ["name=t", f"data_dir={tmp_path / 'data'}", "panel.source=stooq",
                              f"panel.path={FIX / 'stooq_bulk'}", "panel.start=2018-12-31",
                              "panel.end=2019-01-31", *sets])


def snapshot(folder: Path) -> dict[str, int]:
    """mtime of every artifact (not the folder's .lock, which each run of the stage takes)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and p.name != ".lock"}


def test_stage_writes_panel_and_resumes(tmp_path, caplog):
    cfg = stooq_cfg(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline.panel.build"):
        out = make_panel(cfg)
    assert "ohlc_repaired_rows" in caplog.text and "first_record_no_return" in caplog.text
    caplog.clear()
    assert out == panel_dir(cfg)
    assert is_done(out, panel_settings_hash(cfg))
    # start 2018-12-31: the DDD 12-31 record is now in range, so 8 rows (7 + 1).
    meta = read_meta(out)
    assert (meta.n_rows, meta.n_stocks, meta.years) == (8, 3, [2018, 2019])
    assert meta.mktcap_is_proxy and meta.counts["before_start"] == 0
    assert meta.weighting_label == "dollar-volume-weighted (proxy)"
    df = read_panel(out)
    assert df.stock_id.tolist() == [1, 1, 1, 1, 2, 2, 3, 3]
    np.testing.assert_allclose(df[df.stock_id == 3].ret, [0.1, -0.1], rtol=1e-12)
    assert read_stocks(out).ticker.tolist() == ["AAA", "CCC", "DDD"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["panel"]["path"] == str(FIX / "stooq_bulk")
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries

    before = snapshot(out)
    with caplog.at_level(logging.INFO, logger="pipeline.panel.build"):
        make_panel(stooq_cfg(tmp_path))
    assert "skipping" in caplog.text
    assert snapshot(out) == before  # nothing rewritten

    # A changed setting rebuilds; the 2018 partition of the old build is removed.
    make_panel(stooq_cfg(tmp_path, "panel.start=2019-01-01"))
    meta = read_meta(out)
    assert (meta.n_rows, meta.years) == (7, [2019])
    assert not (out / "year=2018").exists()
    assert is_done(out, section_hash(*(lambda c: (c.panel, c.synthetic))(
        stooq_cfg(tmp_path, "panel.start=2019-01-01"))))


def test_failed_rebuild_leaves_previous_panel_intact(tmp_path):
    cfg = stooq_cfg(tmp_path)
    out = make_panel(cfg)
    before = snapshot(out)
    bad = tmp_path / "bad" / "nyse stocks"
    bad.mkdir(parents=True)
    (bad / "x.us.txt").write_text("<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,"
                                  "<OPENINT>\nX.US,D,2019010,000000,1,1,1,1,1,0\n")
    with pytest.raises(PanelInputError, match="line 2, column '<DATE>'"):
        make_panel(stooq_cfg(tmp_path, f"panel.path={tmp_path / 'bad'}"))
    assert snapshot(out) == before
    assert is_done(out, panel_settings_hash(cfg))  # the old panel is still valid
    # ... for its own settings only: the image stage given the failed rebuild's settings refuses it
    from pipeline.images.build import build_image_set
    from pipeline.images.executor import LocalExecutor

    with pytest.raises(StaleInputError, match=r"the panel in .* was built with other settings.*make panel"):
        build_image_set(stooq_cfg(tmp_path, f"panel.path={tmp_path / 'bad'}"), "I20/month", LocalExecutor(1))


def test_bayes_accuracy_dict():
    t = pd.DataFrame({"horizon": np.array([5, 20, 60]), "accuracy": [0.52, 0.55, 0.58],
                      "stderr": [0.01, 0.01, 0.01]})
    assert bayes_accuracy_dict(t) == {"5": 0.52, "20": 0.55, "60": 0.58}
    with pytest.raises(ValueError, match="'horizon' and 'accuracy'"):
        bayes_accuracy_dict(pd.DataFrame({"h": [5], "acc": [0.5]}))


def test_synthetic_source_writes_bayes_accuracy(tmp_path):
    cfg = load_config(None, ["name=s", f"data_dir={tmp_path}", "synthetic.n_stocks=4",
                             "synthetic.start=2018-06-01", "synthetic.end=2019-12-31",
                             "synthetic.bayes_paths=8", "synthetic.bayes_samples=16"])
    out = make_panel(cfg)
    meta = read_meta(out)
    assert meta.source == "synthetic" and not meta.mktcap_is_proxy
    acc = read_json(out / "bayes_accuracy.json")
    assert set(acc) == {"5", "20", "60"} and all(0.0 <= v <= 1.0 for v in acc.values())
    df = read_panel(out)
    assert len(df) == meta.n_rows > 0 and df.ret.notna().all()


def test_relative_path_is_relative_to_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(FIX.parent)
    cfg = stooq_cfg(tmp_path, "panel.path=panel/stooq_bulk")
    out = make_panel(cfg)
    assert read_meta(out).inputs == [f"{FIX / 'stooq_bulk'} (bulk layout)"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="panel/stooq_bulk"):
        make_panel(stooq_cfg(tmp_path, "panel.path=panel/stooq_bulk", "panel.start=2019-01-01"))
