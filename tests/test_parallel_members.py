"""Ensemble members in parallel processes: the same weights and predictions as one after another,
a lost worker named and the finished members kept, workers that die with their parent, one writer
per run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from proc_tools import kill_and_wait  # noqa: E402
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.io import FolderBusyError, folder_lock, read_json  # noqa: E402
from pipeline.predict.core import predict_run  # noqa: E402
from pipeline.procs import plan_workers, run_jobs  # noqa: E402
from pipeline.train.loop import train_run  # noqa: E402


def _weights(run: Path, i: int) -> dict[str, torch.Tensor]:
    return torch.load(run / f"member_{i}" / "best.pt", map_location="cpu", weights_only=True)


def test_parallel_members_match_serial_members(tmp_path):
    """Two members in two 1-thread processes end with exactly the weights, calibration and
    predictions of the same two members trained and predicted one after another in one 1-thread
    process (same seeds and splits; threads are fixed so the arithmetic is the same)."""
    out = {}
    for mode, par in (("serial", 1), ("parallel", 2)):
        cfg = make_config(tmp_path / mode, ensemble=2, epochs=2, parallel_members=par, threads=1,
                          calibration="platt")
        build_image_set(cfg, n_stocks=3)
        run = train_run(cfg)
        out[mode] = (run, pd.read_parquet(predict_run(cfg)), read_json(run / "summary.json"))
    (rs, ps, ss), (rp, pp, sp) = out["serial"], out["parallel"]
    assert (ss["processes"], sp["processes"]) == (1, 2)
    for i in range(2):
        ws, wp = _weights(rs, i), _weights(rp, i)
        assert ws.keys() == wp.keys()
        assert all(torch.equal(ws[k], wp[k]) for k in ws)
        assert read_json(rs / f"member_{i}" / "calibration.json")["scale"] == \
            read_json(rp / f"member_{i}" / "calibration.json")["scale"]
    # the members differ from each other (own seeds), so the comparison above is not vacuous
    w0, w1 = _weights(rp, 0), _weights(rp, 1)
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)
    pd.testing.assert_frame_equal(ps, pp)
    assert [m["best_val_loss"] for m in ss["members"]] == [m["best_val_loss"] for m in sp["members"]]


def _quick(x: int) -> int:
    return x * 2


def _die_later(x: int) -> int:
    time.sleep(1.5)
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def _fail(x: int) -> int:
    raise ValueError(f"bad input {x}")


def test_a_lost_worker_is_named_and_finished_jobs_are_kept():
    results, failures = run_jobs(_quick, {"member 0": (1,)}, 1, 1)
    assert results == {"member 0": 2} and failures == {}
    jobs = {"member 0": (1,), "member 1": (2,)}
    results, failures = run_jobs(_dispatch, {k: (k, v[0]) for k, v in jobs.items()}, 2, 1)
    assert results == {"member 0": 2}
    assert list(failures) == ["member 1"] and "died" in failures["member 1"]
    results, failures = run_jobs(_fail, {"member 3": (3,)}, 1, 1)
    assert results == {} and "ValueError: bad input 3" in failures["member 3"]


def _dispatch(name: str, x: int) -> int:
    return _die_later(x) if name == "member 1" else _quick(x)


def test_a_killed_member_fails_the_stage_by_name_and_a_rerun_resumes(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, ensemble=2, epochs=1, parallel_members=2, threads=1)
    build_image_set(cfg, n_stocks=2)
    import pipeline.train.loop as loop

    real = loop._member_job
    monkeypatch.setattr(loop, "_member_job", _member_job_that_dies_for_member_1)
    with pytest.raises(RuntimeError, match=r"member 1 failed \(its worker process died"):
        train_run(cfg)
    run = paths.run_dir(cfg)
    assert (run / "member_0" / "best.pt").exists() and not (run / "member_1" / "best.pt").exists()
    stamp = (run / "member_0" / "best.pt").stat().st_mtime_ns
    monkeypatch.setattr(loop, "_member_job", real)
    train_run(cfg)
    assert (run / "member_1" / "best.pt").exists()
    assert (run / "member_0" / "best.pt").stat().st_mtime_ns == stamp  # not trained again


def _member_job_that_dies_for_member_1(t, image_dir, index, norm, i, run, m_hash):
    from pipeline.train.loop import _train_and_calibrate, resolve_runtime
    from pipeline.train import ddp

    if i == 1:
        # Die only once member 0 has finished (its marker is written; calibration "none" writes
        # nothing more), however busy the machine is.
        m0 = Path(run) / "member_0"
        deadline = time.time() + 300
        while not (m0 / "_DONE.json").exists():
            assert time.time() < deadline, "member 0 never finished"
            time.sleep(0.1)
        time.sleep(0.5)  # its process hands the result back to the parent
        os.kill(os.getpid(), signal.SIGKILL)
    rt = resolve_runtime(t, ddp.resolve_device(t.device))
    return _train_and_calibrate(t, image_dir, index, norm, i, run, rt, ddp.DistInfo(device=rt.device), m_hash)


def test_workers_die_with_their_parent(tmp_path):
    """kill -9 of the stage process takes its worker processes with it (no orphan keeps running)."""
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pipeline.procs import run_jobs
        from test_parallel_members import _sleep_forever
        run_jobs(_sleep_forever, {{"member 0": ({str(pid_file)!r},)}}, 1, 1)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert pid_file.exists(), "the worker never started"
        worker = int(pid_file.read_text())
        assert not kill_and_wait(parent, {worker}, timeout=10), f"worker {worker} outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _sleep_forever(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(600)


def test_one_writer_per_folder(tmp_path):
    with folder_lock(tmp_path / "run", "train"):
        with pytest.raises(FolderBusyError, match=rf"{tmp_path / 'run'} is in use by pid {os.getpid()} \(train\)"):
            with folder_lock(tmp_path / "run", "train"):
                pass
    with folder_lock(tmp_path / "run", "train"):  # released when the holder's block ends
        pass


def test_a_second_training_process_on_the_same_run_is_refused(tmp_path):
    cfg = make_config(tmp_path, ensemble=1, epochs=1)
    build_image_set(cfg, n_stocks=2)
    with folder_lock(paths.run_dir(cfg), "train"):
        with pytest.raises(FolderBusyError, match="in use by"):
            train_run(cfg)


def test_worker_count():
    assert plan_workers(None, 1) == 1
    assert plan_workers(3, 2) == 2 and plan_workers(1, 5) == 1
    assert 1 <= plan_workers(None, 5) <= 5
    assert plan_workers(None, 0) == 1
    assert np.all([plan_workers(None, n) <= n for n in range(1, 4)])
