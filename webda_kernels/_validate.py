"""Argument checks shared by the ops and modules: a clear TypeError/ValueError naming the argument.

Each check takes ``op`` (the op, module or function the user called, for the message) and
``name`` (the argument's name) and returns the value in the form the caller uses: a Python int
or float, so NumPy scalars (``np.int64(3)``, ``np.float32(0.5)``) are accepted and converted.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import torch

from webda_kernels._dtypes import FLOATING


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
    """``value`` as a float if it is a finite real number (not a bool), else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a float, got {type(value).__name__}")
    try:
        as_float = float(value)
    except OverflowError:  # an int beyond float's range
        as_float = math.inf
    if not math.isfinite(as_float):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return as_float


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(op: str, name: str, value) -> int:
    """``value`` as an int if it is an integer (Python or NumPy, not a bool), else TypeError."""
    if not _is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    return int(value)


def positive_int(op: str, name: str, value) -> int:
    """``value`` if it is an int >= 1, else TypeError/ValueError."""
    value = integer(op, name, value)
    if value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return value


def odd_size(op: str, name: str, value) -> int:
    """``value`` if it is a positive odd int, else TypeError/ValueError: a temporal kernel size,
    whose zero padding of size // 2 on each side keeps the number of frames."""
    value = positive_int(op, name, value)
    if value % 2 == 0:
        raise ValueError(f"{op}: {name} must be odd (a zero padding of half the kernel keeps T), got {value!r}")
    return value


def int_pair(op: str, name: str, value, minimum: int) -> Tuple[int, int]:
    """An int or a pair (tuple or list) of ints, each >= ``minimum``, as a tuple of two ints.

    TypeError for anything else (a float, a bool, a triple); ValueError below ``minimum``.
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(_is_int(v) for v in values):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(values[0]), int(values[1])
