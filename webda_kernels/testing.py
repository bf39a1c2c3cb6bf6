"""The numerics rule every fast path is held to (DESIGN.md, "Numerics and tests").

A fast result passes when its error against the float64 reference is at most
``factor`` times the error of the PyTorch reference run in the same (low) precision, plus
a per-dtype floor; ``factor`` is 2 for outputs and 3 for gradients. NaN never passes.
Errors are norm-wise relative: ``max |a - ref| / max |ref|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOORS = {
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
    torch.float32: 2e-6,
    torch.float64: 1e-13,
}
FACTORS = {"output": 2.0, "grad": 3.0}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|`` in float64; inf if shapes differ or NaN appears."""
    if actual.shape != expected.shape:
        return math.inf
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.numel() == 0:
        return 0.0
    if not torch.isfinite(a).all() and not torch.equal(torch.isfinite(a), torch.isfinite(e)):
        return math.inf
    finite = torch.isfinite(e)
    if not torch.equal(a[~finite], e[~finite]):
        return math.inf
    scale = e[finite].abs().max().item() if finite.any() else 0.0
    diff = (a[finite] - e[finite]).abs().max().item() if finite.any() else 0.0
    return diff / scale if scale > 0 else diff


@dataclass
class Comparison:
    error: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.error <= self.bound


def compare(actual: torch.Tensor, same_precision: torch.Tensor, float64: torch.Tensor, kind: str = "output") -> Comparison:
    """Error of ``actual`` and the bound it must meet (see the module docstring).

    ``same_precision``: the reference run in ``actual``'s dtype; ``float64``: the reference
    run in float64 on the same inputs.
    """
    baseline = relative_error(same_precision, float64)
    bound = FACTORS[kind] * baseline + FLOORS[actual.dtype]
    return Comparison(relative_error(actual, float64), bound)


def assert_matches_reference(actual, same_precision, float64, kind: str = "output", what: str = "") -> None:
    """AssertionError with both numbers if ``actual`` breaks the rule."""
    result = compare(actual, same_precision, float64, kind)
    assert result.ok, f"{what or kind}: relative error {result.error:.3e} > bound {result.bound:.3e} ({actual.dtype})"


def backend_params(spec, dtypes) -> list:
    """``pytest.param(backend, device, dtype)`` for every backend of ``spec`` that serves each
    device here (cpu, and cuda when available) and dtype, with ids like ``cpu-cpu-float32``."""
    import pytest

    from webda_kernels._dispatch import serving_backends

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [
        pytest.param(backend, device, dtype, id=f"{backend}-{device}-{str(dtype).replace('torch.', '')}")
        for device in devices
        for dtype in dtypes
        for backend in serving_backends(spec, torch.device(device), dtype)
    ]
