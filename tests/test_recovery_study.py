"""The signal-recovery study driver (pipeline.studies.recovery) on a tiny synthetic market."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline import paths
from pipeline.config import ConfigError, load_config
from pipeline.studies.recovery import cell_config, check_study, run_study, select_on_validation


def _cfg(root, **extra):
    over = [f"data_dir={root}/data", f"reports_dir={root}/reports", "name=rec",
            "synthetic.n_stocks=40", "synthetic.end=1998-12-31", "synthetic.bayes_paths=16",
            "synthetic.bayes_samples=200", "images.sets=[I20/month]", "images.end_year=1998",
            "images.workers=1", "train.split=custom", "train.insample_years=[1993, 1996]",
            "train.test_years=[1997, 1998]", "train.ensemble=1", "train.epochs=1", "train.threads=1",
            "evaluate.benchmarks=[]", "recovery.pool_sizes=[600, 300]", "recovery.recipes=[fast, paper]"]
    return load_config(None, over + [f"{k}={v}" for k, v in extra.items()])


def test_select_on_validation_uses_only_the_validation_loss():
    t = pd.DataFrame({"pool": [1, 1, 1, 2, 2], "val_loss": [0.69, 0.68, 0.70, 0.66, 0.66],
                      "test_accuracy": [0.9, 0.5, 0.9, 0.5, 0.9]})
    assert select_on_validation(t).tolist() == [False, True, False, True, False]


def test_cells_and_refusals(tmp_path):
    cfg = _cfg(tmp_path)
    c = cell_config(cfg, "fast", 600)
    assert c.train.run_tag == "fast-p600" and c.train.max_train_images == 600
    assert c.train.lr == 1e-4 and c.train.calibration == "platt"
    assert paths.run_dir(c).name == "I20_R20-is1993-1996-os1997-1998-fast-p600" and cfg.train.run_tag == ""
    with pytest.raises(ConfigError, match="unknown recipe"):
        check_study(_cfg(tmp_path, **{"recovery.recipes": "[magic]"}))
    with pytest.raises(ConfigError, match="synthetic"):
        check_study(_cfg(tmp_path, **{"panel.source": "stooq"}))


def test_a_tiny_study_end_to_end(tmp_path):
    cfg = _cfg(tmp_path)
    table = run_study(cfg)
    assert len(table) == 8  # 2 pools x 2 recipes x (raw, calibrated)
    assert list(table["pool"].unique()) == [300, 600]  # smallest first
    assert set(table["variant"]) == {"fast", "fast+platt", "paper", "paper+platt"}
    assert table.groupby("pool")["chosen_on_validation"].sum().tolist() == [1, 1]
    assert ((table["bayes"] > 0.5) & (table["bayes"] < 0.7)).all()
    assert (table["bayes_label"] == "ret_month").all()
    g = (table["test_accuracy"] - 0.5) / (table["bayes"] - 0.5)
    assert (g - table["gain_recovered"]).abs().max() < 1e-12
    md = (tmp_path / "reports" / "rec.md").read_text()
    assert "make study-recovery CONFIG=rec" in md and "Partial" not in md and "fast+platt" in md
    for f in ("rec.png", "rec_reliability.png", "rec.csv"):
        assert (tmp_path / "reports" / f).stat().st_size > 100
    # Resumable: a second run trains nothing and gives the same table.
    again = run_study(cfg)
    pd.testing.assert_frame_equal(table.drop(columns=["train_s"]), again.drop(columns=["train_s"]))
    # Table only, with a pool size not run yet: the finished rows, and the missing run named.
    bigger = _cfg(tmp_path, **{"recovery.pool_sizes": "[300, 600, 900]"})
    part = run_study(bigger, table_only=True)
    assert len(part) == 8 and not (tmp_path / "data" / "rec" / "runs" / "I20_R20-is1993-1996-os1997-1998-fast-p900").exists()
    md = (tmp_path / "reports" / "rec.md").read_text()
    assert "**Partial:** 4 of 6 runs" in md and "fast at pool 900, paper at pool 900" in md
