"""Run by tests/test_train_ddp.py under ``torchrun --nproc_per_node=2``: train the tiny set with
DDP (gloo) and save this rank's final in-memory weights as <out>/rank<r>_m<i>.pt."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_config  # noqa: E402

from pipeline.train.loop import train_run  # noqa: E402

root, out = Path(sys.argv[1]), Path(sys.argv[2])
rank = int(os.environ["RANK"])
cfg = make_config(root, ensemble=1, epochs=2, threads=1)
train_run(cfg, on_member_end=lambda i, m: torch.save(m.state_dict(), out / f"rank{rank}_m{i}.pt"))
