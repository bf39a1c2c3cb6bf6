"""Gradient reversal (DANN, Ganin & Lempitsky): identity forward, ``-coeff * grad`` backward.

Layers, top to bottom: the backends of the backward (reference, C++ CPU, Triton, CUDA),
the ``webda::grad_reverse_backward`` custom op (with its fake), the ``webda::grad_reverse_checked_coeff``
op that checks a tensor ``coeff`` in eager and compiled code alike, the autograd Function whose
forward returns a view of ``x`` (no copy; a custom op may not alias its input, so the
forward is a Function and only the backward is an op), and the public ``grad_reverse``.
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.fx.node

from webda_kernels import _dispatch, _extension, _validate
from webda_kernels._dtypes import FLOATING, accumulation_dtype

SPEC = _dispatch.OpSpec(
    name="grad_reverse",
    dtypes={"cpu": FLOATING, "triton": FLOATING, "cuda": FLOATING},
    # An elementwise scale is memory bound and torch's own kernel is already at bandwidth:
    # benchmarks/bench_grad_reverse.py shows no backend beating it, so auto keeps the reference.
    auto={},
)


def _backward_reference(grad: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    # In the accumulation dtype, as torch multiplies a half tensor by a Python float.
    acc = accumulation_dtype(grad.dtype)
    out = torch.empty_like(grad, memory_format=torch.preserve_format)
    return out.copy_(grad.to(acc) * -coeff.to(acc))


def _backward_cpu(grad: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(grad, memory_format=torch.preserve_format)
    sizes, strides = _extension.elementwise_layout(grad, out)
    _extension.load("cpu").grad_reverse_backward(
        grad.data_ptr(), out.data_ptr(), _extension.dtype_code(grad), sizes, strides, coeff.item()
    )
    return out


def _backward_cuda(grad: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(grad, memory_format=torch.preserve_format)
    sizes, strides = _extension.elementwise_layout(grad, out)
    on_device = coeff.device == grad.device
    _extension.load("cuda").grad_reverse_backward(
        grad.data_ptr(), out.data_ptr(), _extension.dtype_code(grad), sizes, strides,
        0.0 if on_device else coeff.item(), coeff.data_ptr() if on_device else 0,
        grad.device.index, _extension.cuda_stream(grad),
    )
    return out


def _backward_triton(grad: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    from webda_kernels.triton.grad_reverse import grad_reverse_backward

    return grad_reverse_backward(grad, coeff.to(grad.device))


_BACKWARD = {
    "reference": _backward_reference,
    "cpu": _backward_cpu,
    "triton": _backward_triton,
    "cuda": _backward_cuda,
}


@torch.library.custom_op("webda::grad_reverse_backward", mutates_args=())
def grad_reverse_backward(grad: torch.Tensor, coeff: torch.Tensor, backend: str) -> torch.Tensor:
    """``-coeff * grad`` with ``grad``'s layout; coeff is a 0-d float64 tensor."""
    return _BACKWARD[backend](grad, coeff)


@grad_reverse_backward.register_fake
def _(grad, coeff, backend):
    return torch.empty_like(grad, memory_format=torch.preserve_format)


def _check_coeff(value: float, max_abs: float) -> None:
    """ValueError unless ``value`` is finite and ``|value| <= max_abs``."""
    if not math.isfinite(value):
        raise ValueError(f"grad_reverse: coeff must be finite, got {value}")
    if abs(value) > max_abs:
        raise ValueError(f"grad_reverse: |coeff| must be <= {max_abs:.6g} (the largest number of the dtype the "
                         f"gradient is scaled in), got {value}")


@torch.library.custom_op("webda::grad_reverse_checked_coeff", mutates_args=())
def grad_reverse_checked_coeff(coeff: torch.Tensor, max_abs: float) -> torch.Tensor:
    """A copy of the 0-d float64 ``coeff``; ValueError unless it is finite and ``|coeff| <= max_abs``.

    A custom op rather than a Python check so that a compiled graph checks the value each time
    it runs, as eager code does (tracing would bake in one check of one value, or skip it)."""
    _check_coeff(coeff.item(), max_abs)
    return coeff.clone()


@grad_reverse_checked_coeff.register_fake
def _(coeff, max_abs):
    return torch.empty_like(coeff)


# The check is the op's point even where nothing reads its result (no gradient flows): a
# compiled graph must keep it rather than drop it as dead code.
torch.fx.node.has_side_effect(torch.ops.webda.grad_reverse_checked_coeff.default)


class GradReverseFunction(torch.autograd.Function):
    """Forward: a view of ``x`` (same storage). Backward: ``-coeff * grad`` on ``backend``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: torch.Tensor, backend: str) -> torch.Tensor:
        ctx.save_for_backward(coeff)
        ctx.backend = backend
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (coeff,) = ctx.saved_tensors
        return grad_reverse_backward(grad, coeff, ctx.backend), None, None


def _coeff_tensor(coeff, x: torch.Tensor) -> torch.Tensor:
    """``coeff`` (a float or a 1-element floating tensor) as a 0-d float64 tensor on x's device,
    checked: finite and within the range of the dtype x's gradient is scaled in."""
    max_abs = torch.finfo(accumulation_dtype(x.dtype)).max
    if isinstance(coeff, torch.Tensor):
        if coeff.numel() != 1 or not coeff.is_floating_point():
            raise TypeError(f"grad_reverse: a tensor coeff must be a 0-d floating tensor, got {coeff.dtype} of shape {tuple(coeff.shape)}")
        if coeff.device != x.device and coeff.device.type != "cpu":
            raise ValueError(f"grad_reverse: coeff is on {coeff.device} but x is on {x.device}")
        return grad_reverse_checked_coeff(coeff.detach().reshape(()).to(device=x.device, dtype=torch.float64), max_abs)
    value = _validate.finite_number("grad_reverse", "coeff", coeff)
    _check_coeff(value, max_abs)
    return torch.full((), value, dtype=torch.float64, device=x.device)


def grad_reverse(x: torch.Tensor, coeff: Union[float, torch.Tensor] = 1.0, backend: str = "auto") -> torch.Tensor:
    """Gradient reversal layer.

    Args:
        x: any floating tensor (any shape, strides and device).
        coeff: the reversal strength, a finite float or a 0-d floating tensor (for example
            from a schedule; a tensor is not baked into a compiled graph, and is checked when
            the graph runs), at most float32's largest number in magnitude (float64's for
            float64 ``x``), the dtype the gradient is scaled in.
        backend: "auto", "reference", "cpu", "triton" or "cuda" (see ``available_backends()``).

    Returns:
        ``x`` itself as a view (no copy) in the forward pass; in the backward pass the
        gradient flowing to ``x`` is ``-coeff * grad``, in ``grad``'s layout.

    Raises:
        TypeError: ``x`` is not a floating tensor, or ``coeff`` is not a number / 0-d tensor.
        ValueError: ``coeff`` is not finite or too large, or ``backend`` cannot serve ``x``.
    """
    _validate.floating_tensor("grad_reverse", "x", x)
    coeff_t = _coeff_tensor(coeff, x)
    resolved = _dispatch.resolve(SPEC, backend, x.device, x.dtype)
    return GradReverseFunction.apply(x, coeff_t, resolved)
