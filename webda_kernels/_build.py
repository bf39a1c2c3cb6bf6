"""``build_info()``: what parts of the extension were built, how, and why a part is missing."""

from __future__ import annotations

import platform
from typing import Any, Dict

import torch

from webda_kernels import _dispatch, _extension


def build_info() -> Dict[str, Any]:
    """A dict: per part ("cpu", "cuda", "triton") whether it is usable and, if not, why;
    compilers, flags, CUDA architectures; torch, triton, Python and platform versions."""
    info: Dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    cpu = _extension.load("cpu")
    if cpu is None:
        info["cpu"] = {"built": False, "why": _extension.load_error("cpu")}
        info["cuda"] = {"built": False, "why": "unknown: the CPU module that records the build is missing"}
    else:
        details = dict(cpu.build_info())
        cuda_status = details.pop("cuda_status")
        info["cpu"] = {"built": True, "threads": cpu.omp_max_threads(), **details}
        cuda = _extension.load("cuda")
        if cuda is not None:
            info["cuda"] = {"built": True, "usable": torch.cuda.is_available(), **cuda.build_info()}
        else:
            why = cuda_status if cuda_status != "built" else _extension.load_error("cuda")
            info["cuda"] = {"built": False, "why": why}
    if _dispatch.triton_importable():
        import triton

        info["triton"] = {
            "version": triton.__version__,
            "usable": torch.cuda.is_available() or _dispatch.triton_interpreted(),
            "interpreter": _dispatch.triton_interpreted(),
        }
    else:
        info["triton"] = {"version": None, "usable": False, "why": "triton is not installed"}
    return info
