"""DDP: two CPU processes on gloo (torchrun) end with identical weights; only rank 0 writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline.io import read_json  # noqa: E402
from pipeline.paths import run_dir  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_ranks_identical_weights(tmp_path):
    cfg = make_config(tmp_path, ensemble=1, epochs=2, threads=1)
    build_image_set(cfg, n_stocks=3)
    out = tmp_path / "weights"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(Path(__file__).parent / "ddp_worker.py"),
           str(tmp_path), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(out / "rank0_m0.pt", weights_only=True)
    b = torch.load(out / "rank1_m0.pt", weights_only=True)
    assert set(a) == set(b)
    for k in a:  # parameters and BatchNorm buffers
        assert torch.equal(a[k], b[k]), k
    run = run_dir(cfg)
    best = torch.load(run / "member_0" / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], a[k]) for k in a)
    s = read_json(run / "summary.json")
    assert s["world_size"] == 2
    assert s["n_train"] + s["n_val"] == read_json(run / "pool.json")["n"]
    log = (run / "member_0" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header + 2 epochs, written once (rank 0 only)
    # training still learns the pattern with the batch split over two ranks
    assert read_json(run / "member_0" / "summary.json")["best_val_acc"] > 0.8
