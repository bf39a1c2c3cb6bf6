"""Triton kernels of the (2+1)D block's fused temporal part (``webda_kernels.residual_conv2plus1d``).

Tensors z, y, grad_y, grad_z are (N, C, T, H, W) in ``torch.channels_last_3d`` memory
format, i.e. rows r = ((n * T + t) * H + h) * W + w of C contiguous channels; shifting
a row by d frames is ``r + d * H * W``. The temporal conv (weight (C, C, kt), zero
padding p = kt // 2) is then an implicit GEMM over K = kt * C:

    forward    y[r, c]   = act(z[r, c] + bias[c] + sum_{j, c'} z[r + (j - p) HW, c'] w[c, c', j])
    backward   grad_z[r, c'] = g[r, c'] + sum_{j, c} g[r - (j - p) HW, c] w[c, c', j]
               grad_w[c, c', j] = sum_r g[r, c] z[r + (j - p) HW, c']      grad_b[c] = sum_r g[r, c]

with g = grad_y * (y > 0) under relu, else grad_y; rows whose shifted frame falls outside
[0, T) contribute zero. Operands stay in the input dtype (float16, bfloat16, float32) and
every product is accumulated in float32 (``tl.dot`` with IEEE float32, never TF32).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from webda_kernels._dispatch import triton_interpreted
from webda_kernels.triton.cast import cast_rne
from webda_kernels.triton.device import on_input_device

BLOCK_M = 64
# Programs of the weight-gradient reduction (row splits x weight tiles): a few waves on any GPU.
WEIGHT_GRAD_PROGRAMS = 512


@triton.jit
def _load_rows(src_ptr, mask_ptr, rows, chans, row_ok, C, RELU_MASK: tl.constexpr):
    """(rows x chans) tile of a [M][C] activation, zero where ``row_ok`` or the channel is out
    of range; under RELU_MASK, also zero where ``mask_ptr`` (the forward output y) is <= 0."""
    offs = rows[:, None] * C + chans[None, :]
    ok = row_ok[:, None] & (chans[None, :] < C)
    tile = tl.load(src_ptr + offs, mask=ok, other=0.0)
    if RELU_MASK:
        keep = tl.load(mask_ptr + offs, mask=ok, other=0.0) > 0
        tile = tl.where(keep, tile, tl.zeros_like(tile))
    return tile


@triton.jit
def _dot(a, b, acc, INTERPRETED: tl.constexpr):
    """``acc + a @ b`` in float32 with IEEE products. Triton's interpreter multiplies bfloat16
    operands as their integer bit patterns, so there the operands go to float32 first (exact)."""
    if INTERPRETED:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _temporal_conv_kernel(
    src_ptr, mask_ptr, b_ptr, bias_ptr, out_ptr, grad_bias_ptr,
    M, C, T, HW, KT,
    FLIP: tl.constexpr, RELU_MASK: tl.constexpr, RELU_OUT: tl.constexpr,
    HAS_BIAS: tl.constexpr, GRAD_BIAS: tl.constexpr, INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[r, n] = a[r, n] + sum_{j, k} a[r + d_j HW, k] B[j, k, n] (+ bias[n]), relu'd under
    RELU_OUT, with a = src (masked by mask > 0 under RELU_MASK), d_j = j - p (p - j under FLIP)
    and B (kt, C, C) contiguous. Forward: src = z, B[j, k, n] = w[n, k, j]. grad_z: src = grad_y,
    mask = y, FLIP, B[j, k, n] = w[k, n, j]; GRAD_BIAS adds the column sums of a to grad_bias."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    t = (rows // HW) % T
    pad = KT // 2
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j in range(0, KT):
        if FLIP:
            shift = pad - j
        else:
            shift = j - pad
        src_ok = row_ok & (t + shift >= 0) & (t + shift < T)
        src_rows = rows + shift * HW
        for k0 in range(0, C, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            a = _load_rows(src_ptr, mask_ptr, src_rows, ks, src_ok, C, RELU_MASK)
            b_offs = j * C * C + ks[:, None] * C + cols[None, :]
            b = tl.load(b_ptr + b_offs, mask=(ks[:, None] < C) & (cols[None, :] < C), other=0.0)
            acc = _dot(a, b, acc, INTERPRETED)
    residual = _load_rows(src_ptr, mask_ptr, rows, cols, row_ok, C, RELU_MASK).to(tl.float32)
    out = acc + residual
    if HAS_BIAS:
        out += tl.load(bias_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)[None, :]
    if RELU_OUT:
        out = tl.maximum(out, 0.0)
    out_offs = rows[:, None] * C + cols[None, :]
    tl.store(out_ptr + out_offs, cast_rne(out, out_ptr.dtype.element_ty), mask=row_ok[:, None] & (cols[None, :] < C))
    if GRAD_BIAS:
        tl.atomic_add(grad_bias_ptr + cols, tl.sum(residual, axis=0), mask=cols < C)


@triton.jit
def _temporal_weight_grad_kernel(
    grad_y_ptr, y_ptr, z_ptr, grad_w_ptr,
    M, C, T, HW, KT, rows_per_split,
    RELU_MASK: tl.constexpr, INTERPRETED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """grad_w[c, c', j] += sum over this program's rows of g[r, c] z[r + (j - p) HW, c'] (float32
    atomics). Grid: (row splits, C blocks of c, C blocks of c' times kt)."""
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    j = tl.program_id(2) % KT
    cps = (tl.program_id(2) // KT) * BLOCK_C + tl.arange(0, BLOCK_C)
    shift = j - KT // 2
    start = tl.program_id(0).to(tl.int64) * rows_per_split
    end = tl.minimum(start + rows_per_split, M)
    acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < end
        t = (rows // HW) % T
        g = _load_rows(grad_y_ptr, y_ptr, rows, cs, row_ok, C, RELU_MASK)
        z_ok = row_ok & (t + shift >= 0) & (t + shift < T)
        zs = _load_rows(z_ptr, z_ptr, rows + shift * HW, cps, z_ok, C, False)
        acc = _dot(tl.trans(g), zs, acc, INTERPRETED)
    offs = cs[:, None] * (C * KT) + cps[None, :] * KT + j
    tl.atomic_add(grad_w_ptr + offs, acc, mask=(cs[:, None] < C) & (cps[None, :] < C))


def _channel_block(c: int, cap: int) -> int:
    """A power-of-two tile width over channels: at least 16 (tl.dot's minimum), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(c)))


def _rows_and_sizes(z: torch.Tensor) -> Tuple[int, int, int, int]:
    n, c, t, h, w = z.shape
    return n * t * h * w, c, t, h * w


@on_input_device
def _temporal_conv(
    src: torch.Tensor, mask: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
    flip: bool, relu_out: bool, grad_bias: Optional[torch.Tensor],
) -> torch.Tensor:
    """Launches ``_temporal_conv_kernel``; returns its output (channels_last_3d, src's dtype)."""
    out = torch.empty_like(src, memory_format=torch.channels_last_3d)
    m, c, t, hw = _rows_and_sizes(src)
    if m == 0:
        return out
    kt = weight.shape[2]
    # The GEMM's B_j as contiguous (kt, K, N) matrices (coalesced tile loads): forward
    # B_j[c', c] = w[c, c', j], grad_z B_j[c, c'] = w[c, c', j]. A copy of the small weight.
    b = weight.permute(2, 0, 1) if flip else weight.permute(2, 1, 0)
    block_n, block_k = _channel_block(c, 64), _channel_block(c, 32)
    grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(c, block_n))
    _temporal_conv_kernel[grid](
        src, src if mask is None else mask, b.contiguous(), out if bias is None else bias, out,
        out if grad_bias is None else grad_bias,
        m, c, t, hw, kt,
        FLIP=flip, RELU_MASK=mask is not None, RELU_OUT=relu_out,
        HAS_BIAS=bias is not None, GRAD_BIAS=grad_bias is not None, INTERPRETED=triton_interpreted(),
        BLOCK_M=BLOCK_M, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return out


@on_input_device
def _weight_grad(grad_y: torch.Tensor, y: Optional[torch.Tensor], z: torch.Tensor, kt: int) -> torch.Tensor:
    """float32 (C, C, kt) weight gradient, the N*T*H*W reduction split over programs."""
    m, c, t, hw = _rows_and_sizes(z)
    grad_w = torch.zeros((c, c, kt), dtype=torch.float32, device=z.device)
    if m == 0:
        return grad_w
    block_c = _channel_block(c, 64)
    tiles = triton.cdiv(c, block_c) ** 2 * kt
    # About WEIGHT_GRAD_PROGRAMS programs in all, each summing whole BLOCK_M row tiles.
    splits = max(1, min(triton.cdiv(m, BLOCK_M), triton.cdiv(WEIGHT_GRAD_PROGRAMS, tiles)))
    rows_per_split = triton.cdiv(triton.cdiv(m, splits), BLOCK_M) * BLOCK_M
    grid = (triton.cdiv(m, rows_per_split), triton.cdiv(c, block_c), triton.cdiv(c, block_c) * kt)
    _temporal_weight_grad_kernel[grid](
        grad_y, grad_y if y is None else y, z, grad_w,
        m, c, t, hw, kt, rows_per_split,
        RELU_MASK=y is not None, INTERPRETED=triton_interpreted(), BLOCK_M=BLOCK_M, BLOCK_C=block_c,
    )
    return grad_w


def temporal_forward(z: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    """``y = act(z + conv_t(z) + bias)``; z (N, C, T, H, W) channels_last_3d, weight (C, C, kt)
    contiguous, bias (C,) or None, all of one dtype on one GPU. y is channels_last_3d."""
    return _temporal_conv(z, None, weight, bias, flip=False, relu_out=relu, grad_bias=None)


def temporal_backward(
    grad_y: torch.Tensor, z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
    relu: bool, need_weight: bool, need_bias: bool,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(grad_z, grad_weight or None, grad_bias or None)`` of :func:`temporal_forward`.

    grad_y, z, y: (N, C, T, H, W) channels_last_3d; weight (C, C, kt). With
    g = grad_y * (y > 0) under relu: ``grad_z = g + conv_t^T(g)``, ``grad_weight[c, c', j] =
    sum g[:, c, t] z[:, c', t + j - p]``, ``grad_bias = sum g`` (in weight's dtype).
    """
    mask = y if relu else None
    c = z.shape[1]
    grad_bias = torch.zeros((c,), dtype=torch.float32, device=z.device) if need_bias else None
    grad_z = _temporal_conv(grad_y, mask, weight, None, flip=True, relu_out=False, grad_bias=grad_bias)
    grad_weight = _weight_grad(grad_y, mask, z, weight.shape[2]).to(weight.dtype) if need_weight else None
    return grad_z, grad_weight, None if grad_bias is None else grad_bias.to(weight.dtype)
