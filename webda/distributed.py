"""The device a process runs on, and torchrun / DistributedDataParallel plumbing: process
group set-up, rank queries, gathering.

``torchrun --nproc_per_node=N -m webda train-video ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; :func:`init` then joins the process group
(gloo on CPU, nccl on CUDA). Without them everything runs as a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from webda.errors import UserError


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA if torch sees a GPU, else CPU), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device_type: str) -> torch.device:
    """Join the process group if launched by torchrun; return this process's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if launched_by_torchrun() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (N, ...) from every rank along dim 0 (rank order).

    The local rows keep their autograd graph; rows from other ranks are constants (each rank
    back-propagates into its own rows; DDP averages the parameter gradients). Equal N on
    every rank is required.
    """
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = x
    return torch.cat(parts, dim=0)

