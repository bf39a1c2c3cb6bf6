"""Triton kernel of gradient reversal's backward: ``out = -coeff * grad`` over any strides."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from webda_kernels._extension import elementwise_layout
from webda_kernels.triton.cast import cast_rne

BLOCK = 1024


@triton.jit
def _neg_scale_kernel(
    grad_ptr, out_ptr, coeff_ptr, layout_ptr, numel,
    NDIM: tl.constexpr, CONTIGUOUS: tl.constexpr, BLOCK: tl.constexpr,
):
    """out[i] = -coeff * grad[offset(i)]; out contiguous, grad at layout = (sizes..., strides...)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    if CONTIGUOUS:
        src = offs
    else:
        src = tl.zeros([BLOCK], dtype=tl.int64)
        rest = offs
        for d in tl.static_range(NDIM - 1, -1, -1):
            size = tl.load(layout_ptr + d)
            src += (rest % size) * tl.load(layout_ptr + NDIM + d)
            rest = rest // size
    grad = tl.load(grad_ptr + src, mask=mask)
    acc_dtype = tl.float64 if grad.dtype == tl.float64 else tl.float32  # _dtypes.accumulation_dtype, in-kernel
    coeff = tl.load(coeff_ptr).to(acc_dtype)
    out = grad.to(acc_dtype) * -coeff
    tl.store(out_ptr + offs, cast_rne(out, out_ptr.dtype.element_ty), mask=mask)


def grad_reverse_backward(grad: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """``-coeff * grad`` in ``grad``'s layout; coeff is a 0-d float64 tensor on grad's device."""
    out = torch.empty_like(grad, memory_format=torch.preserve_format)
    if grad.numel() == 0:
        return out
    sizes, strides = elementwise_layout(grad, out)
    contiguous = len(sizes) == 1 and strides[0] == 1
    # The strided path reads sizes and strides from a small device tensor; the contiguous one needs none.
    layout = out if contiguous else torch.tensor(sizes + strides, dtype=torch.int64).to(grad.device)
    grid = (triton.cdiv(grad.numel(), BLOCK),)
    _neg_scale_kernel[grid](
        grad, out, coeff, layout, grad.numel(),
        NDIM=len(sizes), CONTIGUOUS=contiguous, BLOCK=BLOCK,
    )
    return out
