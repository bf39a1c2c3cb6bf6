"""The dtypes the ops take, the one accumulation rule they all follow (docs/design.md, "Numerics"),
and what autocast changes."""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch

FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
# What the Triton and CUDA kernels take: float64 has no tensor-core path and stays on the CPU backends.
GPU_FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32})


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums and products are carried in for inputs of ``dtype``: float64 for float64,
    float32 for everything else (half types are never accumulated in half precision)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The dtype autocast casts to on ``device`` here, or None where it is off."""
    if device.type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def without_autocast(device: torch.device) -> ContextManager:
    """A block where autocast is off on ``device``: ops that rank similarities compute in their
    inputs' dtype (a similarity rounded to a half type ties with its neighbours and reorders)."""
    if autocast_dtype(device) is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)
