"""kill -9 of the image stage takes every process it started with it (the forkserver, its pool
workers, the resource tracker), leaves no part file being written, and a rerun builds the same
images as an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from proc_tools import alive, descendants, kill_and_wait  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.images.store import ImageSet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _stage(stage: str, over: list[str]) -> list[str]:
    return [sys.executable, "-m", f"pipeline.{stage}", *[a for o in over for a in ("--set", o)]]


def test_killing_the_image_stage_leaves_no_process_and_a_rerun_builds_the_same_images(tmp_path):
    over = [f"data_dir={tmp_path}", "name=k", "synthetic.n_stocks=300", "synthetic.end='2001-12-31'",
            "images.sets=[I20/week]", "images.end_year=2001", "images.workers=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_stage("panel", over), cwd=tmp_path, env=env, check=True, capture_output=True)
    stage = subprocess.Popen(_stage("images", over), cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait for the pool: the forkserver plus at least two workers (and the resource tracker).
        seen: set[int] = set()
        deadline = time.time() + 120
        while time.time() < deadline and stage.poll() is None:
            seen |= descendants(stage.pid)
            if len(alive(seen)) >= 3:
                break
            time.sleep(0.05)
        assert stage.poll() is None, "the image stage finished before its pool could be killed"
        assert len(alive(seen)) >= 3, f"the pool never started: {seen}"
        time.sleep(0.5)  # let the workers get into their shards
        seen |= descendants(stage.pid)
        survivors = kill_and_wait(stage, seen)
        assert not survivors, f"processes {sorted(survivors)} outlived the killed image stage"
    finally:
        if stage.poll() is None:
            stage.kill()

    cfg = load_config(None, over)
    out = paths.images_dir(cfg, "I20/week")
    # Nothing writes any more: the folder is the same a second later.
    before = sorted((p.name, p.stat().st_size) for p in out.rglob("*") if p.is_file())
    time.sleep(1.0)
    assert sorted((p.name, p.stat().st_size) for p in out.rglob("*") if p.is_file()) == before

    subprocess.run(_stage("images", over), cwd=tmp_path, env=env, check=True, capture_output=True)
    fresh = [f"data_dir={tmp_path / 'fresh'}", *over[1:]]
    subprocess.run(_stage("panel", fresh), cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run(_stage("images", fresh), cwd=tmp_path, env=env, check=True, capture_output=True)
    resumed, clean = ImageSet(out), ImageSet(paths.images_dir(load_config(None, fresh), "I20/week"))
    assert resumed.years == clean.years and resumed.years
    for year in clean.years:
        assert np.array_equal(resumed.images(year), clean.images(year))
        assert resumed.labels(year).equals(clean.labels(year))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
