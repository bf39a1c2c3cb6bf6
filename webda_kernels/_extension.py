"""Loading the compiled modules and turning tensors into the raw arguments they take.

The extension never sees a torch.Tensor: it gets data pointers, sizes and strides in
elements, a dtype code and, on the GPU, the device index and current stream. A module that
is missing or fails to load is reported once (a warning) and its backend is unavailable.
Both modules are loaded when this module is imported (a cheap shared-library load), so
later lookups are plain dictionary reads that torch.compile traces without graph breaks.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Dict, List, Optional, Tuple

import torch

# Must match csrc/common.h enum DType.
DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}

_load_errors: Dict[str, str] = {}


def _import(part: str):
    """``webda_kernels._C_<part>``, or None with one warning (none for CUDA on a machine without it)."""
    try:
        return importlib.import_module(f"webda_kernels._C_{part}")
    except ImportError as err:
        _load_errors[part] = f"{type(err).__name__}: {err}"
        if part == "cpu" or torch.cuda.is_available():
            warnings.warn(
                f"webda_kernels: the {part} extension is unavailable ({err}); falling back to the next "
                "backend. Rebuild with `pip install -e .` and see webda_kernels.build_info().",
                RuntimeWarning,
                stacklevel=2,
            )
        return None


_MODULES = {part: _import(part) for part in ("cpu", "cuda")}


def load(part: str):
    """The compiled module ``webda_kernels._C_<part>`` (part: "cpu" or "cuda"), or None."""
    return _MODULES[part]


def load_error(part: str) -> Optional[str]:
    """Why ``load(part)`` returned None, or None if it loaded (or was never tried)."""
    return _load_errors.get(part)


def dtype_code(t: torch.Tensor) -> int:
    return DTYPE_CODES[t.dtype]


def elementwise_layout(src: torch.Tensor, out: torch.Tensor) -> Tuple[List[int], List[int]]:
    """Sizes and ``src`` strides of an elementwise loop that writes ``out`` contiguously.

    ``out`` must be non-overlapping and dense (as ``torch.empty_like`` makes it). Dimensions
    are put in ``out``'s memory order, size-1 dimensions dropped and neighbours that are
    contiguous in both tensors merged, so a contiguous pair becomes one dimension.
    """
    order = sorted(range(out.dim()), key=lambda d: out.stride(d), reverse=True)
    sizes: List[int] = []
    strides: List[int] = []
    for d in order:
        size, stride = src.size(d), src.stride(d)
        if size == 1:
            continue
        if sizes and strides[-1] == stride * size:
            sizes[-1] *= size
            strides[-1] = stride
        else:
            sizes.append(size)
            strides.append(stride)
    return (sizes, strides) if sizes else ([1], [1])


def cuda_stream(t: torch.Tensor) -> int:
    """The current CUDA stream on ``t``'s device, as an integer handle."""
    return torch.cuda.current_stream(t.device).cuda_stream
