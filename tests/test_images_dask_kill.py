"""kill -9 of the image stage on the Dask executor (``images.executor: dask``, a LocalCluster of
worker processes) takes every process it started with it, leaves no part file being written, and a
rerun builds the same images as an uninterrupted build.

The local pool's version is tests/test_images_kill.py. Here the stage is killed once the Dask
workers are inside their tasks (a first shard's part file exists), not merely started: the workers
are the nanny's spawned children, and each ends when the pipe from its parent closes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from proc_tools import alive, descendants, kill_and_wait  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.images.build import build_image_set  # noqa: E402
from pipeline.images.executor import LocalExecutor  # noqa: E402
from pipeline.images.store import ImageSet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _stage(stage: str, over: list[str]) -> list[str]:
    return [sys.executable, "-m", f"pipeline.{stage}", *[a for o in over for a in ("--set", o)]]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_killing_the_dask_image_stage_leaves_no_process_and_a_rerun_builds_the_same_images(tmp_path):
    over = [f"data_dir={tmp_path}", "name=k", "synthetic.n_stocks=300", "synthetic.end='2001-12-31'",
            "images.sets=[I20/week]", "images.end_year=2001", "images.workers=2",
            "images.executor=dask"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_stage("panel", over), cwd=tmp_path, env=env, check=True, capture_output=True)
    cfg = load_config(None, over)
    out = paths.images_dir(cfg, "I20/week")
    parts = out / "_parts"
    stage = subprocess.Popen(_stage("images", over), cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    try:
        # Wait until the workers are inside their tasks: a first part done by one of them.
        deadline = time.time() + 180
        while time.time() < deadline and stage.poll() is None:
            seen |= descendants(stage.pid)
            if parts.is_dir() and any(parts.rglob("shard_*.json")):
                break
            time.sleep(0.05)
        seen |= descendants(stage.pid)
        assert stage.poll() is None, "the image stage finished before it could be killed mid-run"
        assert any(parts.rglob("shard_*.json")), "no Dask worker wrote a part before the deadline"
        workers = {p for p in alive(seen) if "spawn_main" in _cmdline(p)}
        assert len(workers) >= 2, f"the Dask workers were not seen: {[_cmdline(p) for p in seen]}"
        survivors = kill_and_wait(stage, seen)
        assert not survivors, (f"processes outlived the killed image stage: "
                               f"{[(p, _cmdline(p)) for p in sorted(survivors)]}")
    finally:
        if stage.poll() is None:
            stage.kill()
        # Never leave a worker behind, even when failing: only the stage's own (multiprocessing
        # children of it, by pid and command line).
        for p in alive(seen):
            if "multiprocessing" in _cmdline(p):
                os.kill(p, 9)

    # Nothing writes any more: the folder is the same a second later.
    before = sorted((p.name, p.stat().st_size) for p in out.rglob("*") if p.is_file())
    time.sleep(1.0)
    assert sorted((p.name, p.stat().st_size) for p in out.rglob("*") if p.is_file()) == before
    assert not (out / "_DONE.json").exists()

    # The rerun on Dask resumes; a clean build (in this process: executors write identical bytes,
    # tests/test_executor.py) from the same panel is the reference.
    subprocess.run(_stage("images", over), cwd=tmp_path, env=env, check=True, capture_output=True)
    clean_dir = tmp_path / "clean"
    build_image_set(cfg, "I20/week", LocalExecutor(1), panel_dir=paths.panel_dir(cfg), out_dir=clean_dir)
    resumed, clean = ImageSet(out), ImageSet(clean_dir)
    assert resumed.years == clean.years and resumed.years
    for year in clean.years:
        assert np.array_equal(resumed.images(year), clean.images(year))
        assert resumed.labels(year).equals(clean.labels(year))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not parts.exists()
