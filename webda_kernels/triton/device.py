"""Triton launches on the current CUDA device, on its current stream: each launcher makes its
inputs' device current first."""

from __future__ import annotations

import functools
from typing import Callable

import torch


def on_input_device(launcher: Callable) -> Callable:
    """Decorator: runs ``launcher`` with the device of its first tensor argument made current
    (and the caller's restored after), so that tensors on ``cuda:1`` are never launched on
    ``cuda:0`` or its stream. CPU tensors (Triton's interpreter) need no device."""

    @functools.wraps(launcher)
    def run(*args, **kwargs):
        device = next(a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        if device.type != "cuda":
            return launcher(*args, **kwargs)
        with torch.cuda.device(device):
            return launcher(*args, **kwargs)

    return run
