"""The dtypes the ops take, and the one accumulation rule they all follow (docs/design.md, "Numerics")."""

from __future__ import annotations

import torch

FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
# What the Triton and CUDA kernels take: float64 has no tensor-core path and stays on the CPU backends.
GPU_FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32})


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums and products are carried in for inputs of ``dtype``: float64 for float64,
    float32 for everything else (half types are never accumulated in half precision)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
