"""Triton kernel of top-T attention for a batch that fits one program (Ns, Nt <= 64).

One launch, one program: similarities, top-T selection, sums and the softmax over the batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from webda_kernels._dispatch import triton_interpreted
from webda_kernels.triton.cast import cast_rne

BLOCK_D = 32


@triton.jit
def _topt_fused_kernel(
    src_ptr, tgt_ptr, w_ptr, out_ptr, idx_ptr, proj_ptr,
    n_src, n_tgt, dim, top_t, temperature,
    src_s0, src_s1, tgt_s0, tgt_s1, w_s0, w_s1,
    SOFTMAX: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """proj = src @ w (stored, float32; with UPCAST the tiles are multiplied as float32); sim = proj @ tgt.T; per row the top_t largest sim
    (ties to the lower column, NaN highest) go to idx in descending order and their sum to
    score; out = score, or softmax(score / temperature) over the rows when SOFTMAX."""
    rows = tl.arange(0, BLOCK_S)
    cols = tl.arange(0, BLOCK_T)
    ks = tl.arange(0, BLOCK_D)
    row_ok = rows < n_src
    col_ok = cols < n_tgt
    sim = tl.zeros((BLOCK_S, BLOCK_T), dtype=tl.float32)
    for b0 in range(0, dim, BLOCK_D):
        b = b0 + ks
        b_ok = b < dim
        proj = tl.zeros((BLOCK_S, BLOCK_D), dtype=tl.float32)
        for a0 in range(0, dim, BLOCK_D):
            a = a0 + ks
            a_ok = a < dim
            s = tl.load(src_ptr + rows[:, None] * src_s0 + a[None, :] * src_s1,
                        mask=row_ok[:, None] & a_ok[None, :], other=0.0)
            w = tl.load(w_ptr + a[:, None] * w_s0 + b[None, :] * w_s1, mask=a_ok[:, None] & b_ok[None, :], other=0.0)
            if UPCAST:
                s = s.to(tl.float32)
                w = w.to(tl.float32)
            proj = tl.dot(s, w, proj, input_precision="ieee")
        tl.store(proj_ptr + rows[:, None] * dim + b[None, :], proj, mask=row_ok[:, None] & b_ok[None, :])
        t = tl.load(tgt_ptr + b[:, None] * tgt_s1 + cols[None, :] * tgt_s0,
                    mask=b_ok[:, None] & col_ok[None, :], other=0.0)
        sim = tl.dot(proj, t.to(tl.float32), sim, input_precision="ieee")

    # Order-preserving int64 keys, unique per row: the float's bits mapped to a signed int that
    # sorts like the float (-0 as +0, every NaN above +inf) in the high half, and
    # BLOCK_T - 1 - column in the low half, so equal values rank the lower column first.
    sim = tl.where(sim == 0.0, 0.0, sim)
    bits = sim.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    key = tl.where(sim != sim, 0x7FFFFFFF, key)
    valid = row_ok[:, None] & col_ok[None, :]
    key = tl.where(valid, key, -2147483648)  # below every real key (-inf maps above it)
    packed = (key.to(tl.int64) << 32) + (BLOCK_T - 1 - cols)[None, :].to(tl.int64)
    taken = tl.full((BLOCK_S, BLOCK_T), -2147483648, tl.int32).to(tl.int64) << 32
    selected = tl.zeros((BLOCK_S, BLOCK_T), dtype=tl.int1)
    for t_i in range(0, top_t):
        best = tl.max(packed, axis=1)
        hit = packed == best[:, None]
        selected = selected | hit
        col = BLOCK_T - 1 - (best - ((best >> 32) << 32))
        tl.store(idx_ptr + rows * top_t + t_i, col, mask=row_ok)
        packed = tl.where(hit, taken, packed)
    # Summed in float64 and rounded once: no float32 rounding error grows with top_t.
    score = tl.sum(tl.where(selected, sim, 0.0).to(tl.float64), axis=1).to(tl.float32)

    if SOFTMAX:  # the largest score subtracted before dividing: score / temperature may overflow
        top = tl.max(tl.where(row_ok, score, float("-inf")), axis=0)
        z = tl.where(row_ok, (score - top) / temperature, float("-inf"))
        e = tl.exp(z - tl.max(z, axis=0))
        score = e / tl.sum(e, axis=0)
    tl.store(out_ptr + rows, cast_rne(score, out_ptr.dtype.element_ty), mask=row_ok)


def topt_attention_fused(src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, top_t: int,
                         temperature: float, softmax: bool):
    """``(out (Ns,), indices (Ns, top_t) int64, projected (Ns, D) float32)`` in one launch; Ns, Nt <= 64."""
    n_src, dim = src.shape
    n_tgt = tgt.shape[0]
    out = src.new_empty(n_src)
    indices = src.new_empty((n_src, top_t), dtype=torch.int64)
    projected = src.new_empty((n_src, dim), dtype=torch.float32)
    block_s = max(16, triton.next_power_of_2(n_src))
    block_t = max(16, triton.next_power_of_2(n_tgt))
    _topt_fused_kernel[(1,)](
        src, tgt, weight, out, indices, projected,
        n_src, n_tgt, dim, top_t, temperature,
        src.stride(0), src.stride(1), tgt.stride(0), tgt.stride(1), weight.stride(0), weight.stride(1),
        # Triton's interpreter multiplies bfloat16 tiles wrongly (3.9); float32 operands give
        # the same exact products the GPU's bfloat16 dot accumulates in float32.
        SOFTMAX=softmax, UPCAST=src.dtype == torch.bfloat16 and triton_interpreted(), BLOCK_S=block_s, BLOCK_T=block_t, BLOCK_D=BLOCK_D,
        num_warps=4 if block_s * block_t <= 1024 else 8,
    )
    return out, indices, projected
