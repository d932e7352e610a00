"""Stages refuse unfinished or stale inputs (naming the stage to rerun) and clear what a killed run
left behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.images.build import build_image_set as build_images  # noqa: E402
from pipeline.images.executor import LocalExecutor  # noqa: E402
from pipeline.io import StaleInputError, marker_path, remove_stale_temps  # noqa: E402
from pipeline.panel.build import make_panel  # noqa: E402
from pipeline.predict.core import predict_run  # noqa: E402
from pipeline.train.loop import train_run  # noqa: E402


def test_training_refuses_an_unfinished_image_set(tmp_path):
    cfg = make_config(tmp_path, ensemble=1, epochs=1)
    d = build_image_set(cfg, n_stocks=2)
    marker_path(d).unlink()  # as if the image stage had been killed before its last step
    with pytest.raises(StaleInputError, match=r"image set in .* is unfinished.*make images"):
        train_run(cfg)


def test_images_and_training_refuse_inputs_built_under_other_settings(tmp_path):
    over = [f"data_dir={tmp_path}", "name=s", "synthetic.n_stocks=12", "synthetic.end='1995-12-31'",
            "images.sets=[I5/week]", "images.end_year=1995", "images.workers=1", "train.model=I5",
            "train.image_set=I5/week", "train.horizon=5", "train.split=custom",
            "train.insample_years=[1993,1994]", "train.test_years=[1995,1995]", "train.ensemble=1",
            "train.epochs=1", "train.threads=1"]
    cfg = load_config(None, over)
    with pytest.raises(StaleInputError, match=r"the panel in .* is missing or unfinished.*make panel"):
        build_images(cfg, "I5/week", LocalExecutor(1))
    make_panel(cfg)
    build_images(cfg, "I5/week", LocalExecutor(1))
    # the images were drawn with a moving average; a config without it must not train on them
    no_ma = load_config(None, [*over, "images.ma=false"])
    with pytest.raises(StaleInputError, match=r"the image set in .* was built with other settings.*make images"):
        train_run(no_ma)
    # the panel rebuilt under other settings (another seed): the old images are stale too
    reseeded = load_config(None, [*over, "synthetic.seed=7"])
    make_panel(reseeded)
    with pytest.raises(StaleInputError, match="make images"):
        train_run(reseeded)
    with pytest.raises(StaleInputError, match=r"the panel in .* was built with other settings.*make panel"):
        build_images(cfg, "I5/week", LocalExecutor(1))


def test_temporary_files_of_a_killed_run_are_removed(tmp_path):
    cfg = make_config(tmp_path, ensemble=1, epochs=1)
    build_image_set(cfg, n_stocks=2)
    run = paths.run_dir(cfg)
    (run / "member_0").mkdir(parents=True)
    left = [run / ".summary.json.k2j3.tmp", run / "member_0" / ".checkpoint.pt.a8c.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    keep = run / "member_0" / "notes.txt"
    keep.write_text("not a temporary file")
    train_run(cfg)
    assert not any(p.exists() for p in left) and keep.exists()
    parts = run / "predict_parts"
    parts.mkdir()
    stale = parts / ".m0_1997.npy.x1.tmp"
    stale.write_bytes(b"half")
    predict_run(cfg)
    assert not stale.exists()


def test_remove_stale_temps_pattern_and_depth(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in (".a.json.1.tmp", "sub/.b.npy.2.tmp", ".predictions.parquet.3.tmp", "c.tmp"):
        (tmp_path / name).write_text("x")
    assert remove_stale_temps(tmp_path, ".predictions.parquet.*.tmp", recursive=False) == 1
    assert remove_stale_temps(tmp_path, recursive=False) == 1
    assert remove_stale_temps(tmp_path) == 1  # the one below
    assert (tmp_path / "c.tmp").exists()  # not an atomic_path temporary: left alone
