"""Test helpers: the numerics rule every fast path is held to, and what tests build inputs from.

The rule (docs/design.md, "Numerics"): a fast result passes when its error against the
float64 reference is at most ``factor`` times the error of the PyTorch reference run in the
same (low) precision, plus a per-dtype floor; ``factor`` is 2 for outputs and 3 for
gradients. Where a test runs the reference in more than one equally valid summation order,
the largest of their errors is the reference's error: under cancellation one order's
rounding can be far luckier than another's. NaN never passes. Errors are norm-wise
relative: ``max |a - ref| / max |ref|``.
The float32 reference is IEEE float32 (:func:`ieee_float32`), never TF32.

Used by the tests, the benchmarks and ``python -m webda_kernels.check``; importing it needs
no pytest (only :func:`backend_params` does).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

import torch
from torch import nn

from webda_kernels import _dispatch

FLOORS = {
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
    torch.float32: 2e-6,
    torch.float64: 1e-13,
}
FACTORS = {"output": 2.0, "grad": 3.0}

# Every dtype the ops take, float32 first; the half-precision ones.
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)
# Whether torch sees a GPU here, and the device types tests run on ("cpu", and "cuda" with a GPU).
GPU = torch.cuda.is_available()
DEVICES = tuple(device.type for device in _dispatch.machine_devices())


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Within the block torch's float32 matmuls and cuDNN convolutions use IEEE float32, not TF32
    (on CUDA, cuDNN convolutions use TF32 by default): the float32 references that tests and
    ``python -m webda_kernels.check`` hold the kernels to are then float32 answers."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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


def compare(actual: torch.Tensor, same_precision: Union[torch.Tensor, Sequence[torch.Tensor]], float64: torch.Tensor,
            kind: str = "output") -> Comparison:
    """Error of ``actual`` and the bound it must meet (see the module docstring).

    ``same_precision``: the reference run in ``actual``'s dtype (a tensor, or a sequence of
    runs in different summation orders: their largest error counts); ``float64``: the
    reference run in float64 on the same inputs.
    """
    runs = [same_precision] if isinstance(same_precision, torch.Tensor) else list(same_precision)
    baseline = max(relative_error(run, float64) for run in runs)
    bound = FACTORS[kind] * baseline + FLOORS[actual.dtype]
    return Comparison(relative_error(actual, float64), bound)


def assert_matches_reference(actual, same_precision, float64, kind: str = "output", what: str = "") -> None:
    """AssertionError with both numbers if ``actual`` breaks the rule."""
    result = compare(actual, same_precision, float64, kind)
    assert result.ok, f"{what or kind}: relative error {result.error:.3e} > bound {result.bound:.3e} ({actual.dtype})"


def backend_params(spec, dtypes) -> list:
    """``pytest.param(backend, device, dtype)`` for every backend of ``spec`` that serves each
    device here (:data:`DEVICES`) and dtype, with ids like ``cpu-cpu-float32``."""
    import pytest

    return [
        pytest.param(backend, device, dtype, id=f"{backend}-{device}-{str(dtype).replace('torch.', '')}")
        for device in DEVICES
        for dtype in dtypes
        for backend in _dispatch.serving_backends(spec, torch.device(device), dtype)
    ]


def representable_randn(*size: int, dtype: torch.dtype, scale: float = 1.0, device=None) -> torch.Tensor:
    """float64 normal values (times ``scale``) rounded to ``dtype``: exactly representable in
    ``dtype``, so a run in ``dtype`` and the float64 reference see the same inputs."""
    return (torch.randn(size, dtype=torch.float64, device=device) * scale).to(dtype).double()


def randomise_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm in ``module`` non-trivial statistics and affine parameters, as
    after training (small means and shifts, variances and scales of either sign near 1), drawn
    from a generator seeded with ``seed``. Returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            c = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            if m.weight is not None:
                sign = torch.randint(0, 2, (c,), generator=gen) * 2 - 1
                m.weight.copy_((torch.rand(c, generator=gen) + 0.5) * sign)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return module


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())
