"""Backend selection: ``backend="auto"|"reference"|"cpu"|"triton"|"cuda"``.

Each op declares, in an :class:`OpSpec`, the dtypes each fast backend serves and the
order in which ``auto`` tries backends per device type. ``auto`` lists only backends that
the benchmarks in ``benchmarks/`` show beat the reference at the shapes the op claims.
``WEBDA_KERNELS_BACKEND`` replaces ``auto`` globally (for example ``reference`` to compare).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Tuple

import torch

from webda_kernels import _extension

BACKENDS = ("reference", "cpu", "triton", "cuda")
ENV_BACKEND = "WEBDA_KERNELS_BACKEND"

FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


@dataclass(frozen=True)
class OpSpec:
    """What an op's backends serve. ``dtypes[backend]``: dtypes that backend takes;
    ``auto[device_type]``: backends ``auto`` tries in order (the reference always last)."""

    name: str
    dtypes: Dict[str, FrozenSet[torch.dtype]]
    auto: Dict[str, Tuple[str, ...]] = field(default_factory=dict)


_TRITON_IMPORTABLE = importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """Whether Triton kernels run in the interpreter: TRITON_INTERPRET=1, which Triton reads when
    the (lazily imported) kernel modules define their kernels."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_importable() -> bool:
    return _TRITON_IMPORTABLE


def _device_ready(backend: str, device: torch.device) -> bool:
    if backend == "reference":
        return True
    if backend == "cpu":
        return device.type == "cpu" and _extension.load("cpu") is not None
    if backend == "cuda":
        return device.type == "cuda" and _extension.load("cuda") is not None
    if backend == "triton":
        if not triton_importable():
            return False
        return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())
    return False


def serving_backends(spec: OpSpec, device: torch.device, dtype: torch.dtype) -> List[str]:
    """Backends that can run ``spec``'s op on tensors of this device and dtype."""
    return [
        b
        for b in BACKENDS
        if (b == "reference" or dtype in spec.dtypes.get(b, ())) and _device_ready(b, device)
    ]


def resolve(spec: OpSpec, backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend to run for a request; ValueError if it cannot serve the inputs."""
    if not isinstance(backend, str):
        raise TypeError(f"{spec.name}: backend must be a string, got {type(backend).__name__}")
    source = "backend"
    if backend == "auto":
        override = os.environ.get(ENV_BACKEND, "auto").strip() or "auto"
        if override != "auto":
            backend, source = override, ENV_BACKEND
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"{spec.name}: {source}={backend!r} is not one of {('auto',) + BACKENDS}")
    if backend == "auto":
        candidates = spec.auto.get(device.type, ())
        if not candidates:  # the common small-shape case: no per-call backend scan
            return "reference"
        serving = serving_backends(spec, device, dtype)
        return next((b for b in candidates if b in serving), "reference")
    serving = serving_backends(spec, device, dtype)
    if backend not in serving:
        raise ValueError(
            f"{spec.name}: {source}={backend!r} cannot run on {device.type} tensors of dtype {dtype}; "
            f"backends that can: {serving}"
        )
    return backend


def machine_backends(spec: OpSpec) -> List[str]:
    """Backends of ``spec`` usable on this machine for some device and dtype."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    usable = {b for dev in devices for dt in FLOATING for b in serving_backends(spec, dev, dt)}
    return [b for b in BACKENDS if b in usable]
