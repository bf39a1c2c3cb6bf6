"""``build_info()``: what parts of the extension were built, how, and why a part is missing."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Dict

import torch

from webda_kernels import _dispatch, _extension

# Written by setup.py next to the compiled modules: how the CUDA module's build went.
BUILD_INFO_PATH = Path(__file__).with_name("_build_info.json")


def _recorded_cuda_build() -> Dict[str, Any]:
    """What setup.py recorded of the CUDA module's build ({} if nothing was recorded)."""
    try:
        return json.loads(BUILD_INFO_PATH.read_text())["cuda"]
    except (OSError, ValueError, KeyError):
        return {}


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
    else:
        info["cpu"] = {"built": True, "threads": cpu.omp_max_threads(), **cpu.build_info()}
    cuda = _extension.load("cuda")
    if cuda is not None:
        info["cuda"] = {"built": True, "usable": torch.cuda.is_available(), **cuda.build_info()}
    else:
        recorded = _recorded_cuda_build()
        why = recorded.get("why") if not recorded.get("built", False) else None
        info["cuda"] = {"built": False, "why": why or _extension.load_error("cuda")}
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
