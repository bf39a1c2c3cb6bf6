"""Argument checks shared by the ops: clear TypeError/ValueError naming the argument."""

from __future__ import annotations

import math
from typing import Optional

import torch

from webda_kernels._dispatch import FLOATING


def floating_tensor(op: str, name: str, t, ndim: Optional[int] = None) -> torch.Tensor:
    """``t`` if it is a floating tensor (of rank ``ndim`` when given), else TypeError/ValueError."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOATING:
        raise TypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def same_device_and_dtype(op: str, first: str, t: torch.Tensor, **others: Optional[torch.Tensor]) -> None:
    """ValueError/TypeError if any of ``others`` is on another device or of another dtype than ``t``."""
    for name, other in others.items():
        if other is None:
            continue
        if other.device != t.device:
            raise ValueError(f"{op}: {name} is on {other.device} but {first} is on {t.device}; move them to one device")
        if other.dtype != t.dtype:
            raise TypeError(f"{op}: {name} has dtype {other.dtype} but {first} has {t.dtype}; use one dtype")


def finite_number(op: str, name: str, value) -> float:
    """``value`` as a float if it is a finite real number, else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return float(value)
