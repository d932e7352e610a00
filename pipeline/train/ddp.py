"""Data-parallel training with ``torchrun`` (DistributedDataParallel).

    torchrun --nproc_per_node=2 -m pipeline.train --config X

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; :func:`init_distributed`
reads them and joins the process group (gloo on CPU, nccl on CUDA). Without them (plain
``python -m pipeline.train``) everything degrades to one process and these helpers are no-ops.
Every rank trains on its shard of each epoch (DistributedSampler); gradients are averaged by DDP;
validation sums are all-reduced so every rank takes the same early-stopping decision; only rank 0
writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from pipeline.errors import InputError


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: rank in [0, world_size), and its torch device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """auto: CUDA when available, else CPU; cuda fails clearly when there is none."""
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("train.device is 'cuda' but torch sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the torchrun process group if the environment asks for one; idempotent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP wrapper when distributed (broadcasts rank 0's initial weights), else the model."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(values: np.ndarray, info: DistInfo) -> np.ndarray:
    """Element-wise sum over ranks of a float64 vector (identity on one process)."""
    if not info.distributed:
        return np.asarray(values, dtype=np.float64)
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def sync_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP only broadcasts buffers at the start of each forward, so after the last training batch
    every rank holds its own running statistics; evaluation and checkpoints must use one set.
    """
    if not info.distributed:
        return
    for b in unwrap(model).buffers():
        dist.broadcast(b.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def params_checksum(model: nn.Module) -> float:
    """Sum of |every parameter and buffer| in float64: a cheap fingerprint to compare replicas."""
    return float(sum(t.detach().double().abs().sum().item()
                     for t in unwrap(model).state_dict().values() if t.is_floating_point()))


def check_replicas(model: nn.Module, info: DistInfo) -> None:
    """Raise if the ranks' weights differ (they must be identical after every DDP step)."""
    if not info.distributed:
        return
    c = torch.tensor([params_checksum(model)], dtype=torch.float64, device=info.device)
    lo, hi = c.clone(), c.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise RuntimeError(f"DDP replicas diverged: weight checksums {lo.item()} .. {hi.item()}")
