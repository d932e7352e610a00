"""Small-sample recipe variants: a base-rate head, post-hoc calibration, run tags, recipes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.config import ConfigError, load_config  # noqa: E402
from pipeline.io import read_json  # noqa: E402
from pipeline.models.registry import create_model  # noqa: E402
from pipeline.predict.core import predict_run  # noqa: E402
from pipeline.train.calibration import apply_calibration  # noqa: E402
from pipeline.train.loop import init_head_at_base_rate, train_run  # noqa: E402
from pipeline.train.recipes import RECIPES, apply_recipe  # noqa: E402


def test_base_rate_head_starts_at_the_base_rate():
    torch.manual_seed(0)
    model = create_model("I5").eval()
    init_head_at_base_rate(model, np.array([1, 1, 1, 0]))
    with torch.no_grad():
        p = torch.softmax(model(torch.randn(16, 1, 32, 15)), 1)[:, 1]
    assert torch.allclose(p, torch.full_like(p, 0.75), atol=1e-6)


def test_paper_head_starts_with_large_logits():
    """Why the variant exists: the paper's Xavier head over 15,360 features gives logits far from 0."""
    torch.manual_seed(0)
    model = create_model("I5").train()
    with torch.no_grad():
        lg = model(torch.randn(256, 1, 32, 15))
    assert (lg[:, 1] - lg[:, 0]).abs().mean() > 0.5


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cal")
    cfg = make_config(root, ensemble=2, epochs=1, calibration="platt", head_init="base_rate")
    build_image_set(cfg, n_stocks=3)
    return cfg, train_run(cfg)


def test_calibration_is_fitted_per_member_and_applied_to_predictions(calibrated_run):
    cfg, run = calibrated_run
    cals = [read_json(run / f"member_{i}" / "calibration.json") for i in range(2)]
    for c in cals:
        assert c["method"] == "platt" and c["loss_after"] <= c["loss_before"] and c["n"] > 0
    summary = read_json(run / "summary.json")
    assert [m["calibration"]["method"] for m in summary["members"]] == ["platt", "platt"]
    df = pd.read_parquet(predict_run(cfg))
    assert "p_up_uncalibrated" in df.columns
    # Raw member probabilities are recoverable from the uncalibrated ensemble mean and the maps.
    raw0 = np.asarray(df["p_up_m0"])
    assert not np.allclose(raw0, df["p_up_uncalibrated"])
    assert np.allclose(df["p_up"], (df["p_up_m0"] + df["p_up_m1"]) / 2, atol=1e-15)
    parts = [np.load(run / "predict_parts" / f"m{i}_1997.npy") for i in range(2)]
    assert np.allclose(df["p_up_uncalibrated"], (parts[0] + parts[1]) / 2, atol=1e-15)
    assert np.allclose(df["p_up_m1"], apply_calibration(parts[1], cals[1]), atol=1e-15)


def test_changing_only_the_calibration_keeps_the_trained_members(calibrated_run, caplog):
    cfg, run = calibrated_run
    w0 = (run / "member_0" / "best.pt").stat().st_mtime_ns
    cfg.train.calibration = "temperature"
    caplog.set_level("INFO")
    train_run(cfg)
    assert "epoch 0" not in caplog.text  # nothing retrained
    assert (run / "member_0" / "best.pt").stat().st_mtime_ns == w0
    c = read_json(run / "member_0" / "calibration.json")
    assert c["method"] == "temperature" and c["shift"] == 0.0
    cfg.train.calibration = "platt"


def test_run_tag_separates_runs_and_is_validated(tmp_path):
    cfg = load_config(None, ["train.run_tag=fast-p5000"])
    assert paths.run_dir(cfg).name == "I20_R20-fast-p5000"
    assert paths.eval_dir(cfg).name == "I20_R20-fast-p5000"
    # The split, the label and an image frequency other than the horizon's are in the name too,
    # so a run on other years or labels never replaces this one.
    for over, name in ((["train.split=jf"], "I20_R20-jf"),
                       (["train.split=custom", "train.insample_years=[1993,1998]",
                         "train.test_years=[1999,2003]"], "I20_R20-is1993-1998-os1999-2003"),
                       (["train.label_return=records"], "I20_R20-rec"),
                       (["train.image_set=I20/week"], "I20_R20-week"),
                       (["train.image_set=I20/week", "train.horizon=5"], "I20_R5")):
        assert paths.run_dir(load_config(None, over)).name == name
    with pytest.raises(ConfigError, match="run_tag"):
        load_config(None, ["train.run_tag=a/b"])
    with pytest.raises(ConfigError, match="train.calibration"):
        load_config(None, ["train.calibration=isotonic"])


def test_recipes_apply_only_their_settings():
    cfg = load_config(None)
    fast = apply_recipe(cfg, "fast")
    assert fast.train.lr == 1e-4 and fast.train.head_init == "base_rate"
    assert cfg.train.lr == 1e-5 and cfg.train.head_init == "paper"  # the input is not changed
    assert apply_recipe(cfg, "paper").train == cfg.train
    assert set(RECIPES) >= {"paper", "fast"}
    with pytest.raises(ConfigError, match="unknown recipe"):
        apply_recipe(cfg, "magic")
