"""Backend selection: ``backend="auto"|"reference"|"cpu"|"triton"|"cuda"``.

Each op declares, in an :class:`OpSpec`, the dtypes each fast backend serves and the
order in which ``auto`` tries backends per device type. ``auto`` lists only backends that
the benchmarks in ``benchmarks/`` show beat the reference at the shapes the op claims.
What ``auto`` means can be replaced: inside a :func:`use_backend` block by the block's
backend, else by the ``WEBDA_KERNELS_BACKEND`` environment variable (for example
``reference`` to compare); an explicit ``backend=`` argument always wins.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import torch

from webda_kernels import _extension
from webda_kernels._dtypes import FLOATING

BACKENDS = ("reference", "cpu", "triton", "cuda")
ENV_BACKEND = "WEBDA_KERNELS_BACKEND"


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


# The backend of the innermost active use_backend block (None outside any block). A ContextVar:
# each thread and each asyncio task sees its own choice.
_BLOCK_BACKEND: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("webda_kernels_backend",
                                                                                 default=None)
# Whether any use_backend block was entered in this process (see _block_backend).
_BLOCKS_USED = False


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Within the block, ``backend="auto"`` resolves as if ``WEBDA_KERNELS_BACKEND`` were ``name``.

    ``name``: "reference", "cpu", "triton" or "cuda"; "auto" or None undo any enclosing block
    (``WEBDA_KERNELS_BACKEND``, or ``auto``'s own choice, applies again). The choice is
    context-local (other threads and asyncio tasks keep theirs), blocks nest, and the previous
    choice comes back on exit, also when the block raises. An explicit ``backend=`` argument
    still wins over the block. A function compiled with ``torch.compile`` or exported with
    ``torch.export`` keeps the choice in effect when it was traced (as it keeps the environment
    variable's); trace it inside the block to get the block's backend. Enter blocks outside
    compiled code.

    Raises:
        TypeError, ValueError: ``name`` is not one of the names above (checked on entry).
    """
    global _BLOCKS_USED
    if name is not None and not isinstance(name, str):
        raise TypeError(f"use_backend: name must be a string or None, got {type(name).__name__}")
    if name is not None and name not in ("auto",) + BACKENDS:
        raise ValueError(f"use_backend: {name!r} is not one of {('auto',) + BACKENDS} (or None)")
    if not _BLOCKS_USED:
        torch.compiler.assume_constant_result(_block_backend)
        _BLOCKS_USED = True
    token = _BLOCK_BACKEND.set(None if name == "auto" else name)
    try:
        yield
    finally:
        _BLOCK_BACKEND.reset(token)


def _block_backend() -> Optional[str]:
    """The backend of the innermost use_backend block here, or None.

    Dynamo cannot trace ``ContextVar.get``, and a graph break would fail fullgraph compiles and
    torch.export. Marked by ``torch.compiler.assume_constant_result``, this function is called
    once while tracing and its value is compiled in, the way dynamo reads os.environ (without a
    guard). The marking imports torch._dynamo (seconds, and triton before check.py can set
    TRITON_INTERPRET), so it waits for the first block; until then nothing calls this function.
    """
    return _BLOCK_BACKEND.get()


def environment_backend() -> Optional[str]:
    """The backend that ``WEBDA_KERNELS_BACKEND`` makes ``auto`` mean, or None when it is unset,
    empty or "auto".

    Raises:
        ValueError: the variable names no backend (a typo must not silently leave ``auto`` on).
    """
    env = os.environ.get(ENV_BACKEND, "auto").strip() or "auto"
    if env not in ("auto",) + BACKENDS:
        raise ValueError(f"{ENV_BACKEND}={env!r} is not one of {('auto',) + BACKENDS}")
    return None if env == "auto" else env


def _auto_override() -> Tuple[Optional[str], str]:
    """What replaces ``auto`` here, and where it comes from: (None, "") if nothing does."""
    block = _block_backend() if _BLOCKS_USED else None
    if block is not None:
        return block, "use_backend"
    env = environment_backend()
    return (None, "") if env is None else (env, ENV_BACKEND)


def resolve(spec: OpSpec, backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend to run for a request; ValueError if it cannot serve the inputs."""
    if not isinstance(backend, str):
        raise TypeError(f"{spec.name}: backend must be a string, got {type(backend).__name__}")
    source = "backend"
    if backend == "auto":
        override, override_source = _auto_override()
        if override is not None:
            backend, source = override, override_source
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


def machine_devices() -> List[torch.device]:
    """The device types this machine runs ops on: the CPU, and CUDA when torch sees a GPU."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def machine_backends(spec: OpSpec) -> List[str]:
    """Backends of ``spec`` usable on this machine for some device and dtype."""
    usable = {b for dev in machine_devices() for dt in FLOATING for b in serving_backends(spec, dev, dt)}
    return [b for b in BACKENDS if b in usable]
