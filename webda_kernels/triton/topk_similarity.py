"""Triton streaming top-k of ``query @ bank.T``: one kernel computes similarity tiles and keeps,
for each query row and bank chunk, the K_PAD best entries as packed 64-bit keys.

Key of similarity ``s`` (float32) at bank index ``j``: the high 32 bits are ``s``'s bits made
order-preserving as a signed integer (NaN made one positive NaN, which sorts above +inf;
-0.0 made 0.0), the low 32 bits are ``0xFFFFFFFF - j``, so a larger key is a higher rank and
equal similarities rank by lower index. ``EMPTY`` (the smallest int64) marks an unused slot.
The op module merges the chunks' keys with ``torch.topk`` and decodes them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from webda_kernels._dispatch import triton_interpreted
from webda_kernels.triton.device import on_input_device

EMPTY = tl.constexpr(-(2**63))


@triton.jit
def _pack_keys(scores, cols):
    """int64 keys of float32 ``scores`` (BLOCK_M, BLOCK_N) at bank indices ``cols`` (BLOCK_N,)."""
    bits = scores.to(tl.int32, bitcast=True)
    bits = tl.where(scores != scores, 0x7FC00000, bits)
    bits = tl.where(scores == 0.0, 0, bits)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    low = tl.full((), 0xFFFFFFFF, tl.int64) - cols.to(tl.int64)
    return (ordered.to(tl.int64) << 32) | low[None, :]


@triton.jit
def _fold(top, keys, slots):
    """Running top-K_PAD ``top`` (BLOCK_M, K_PAD) merged with candidate ``keys`` (BLOCK_M, BLOCK_N).

    Candidates at or below a row's threshold (its smallest kept key) are dropped with one
    comparison; the rest enter one per row per step, each replacing the row's smallest key.
    """
    threshold = tl.min(top, axis=1)
    keys = tl.where(keys > threshold[:, None], keys, EMPTY)
    while tl.max(tl.max(keys, axis=1), axis=0) != EMPTY:
        best = tl.max(keys, axis=1)
        slot = tl.argmin(top, axis=1)
        enter = (slots[None, :] == slot[:, None]) & (best > threshold)[:, None]
        top = tl.where(enter, best[:, None], top)
        threshold = tl.min(top, axis=1)
        keys = tl.where((keys > threshold[:, None]) & (keys != best[:, None]), keys, EMPTY)
    return top


@triton.jit
def _partial_topk_kernel(
    q_ptr, b_ptr, out_ptr, n_query, n_bank, dim, chunk, n_chunks,
    stride_qm, stride_qd, stride_bn, stride_bd,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, K_PAD: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """out[m, c, :] = the K_PAD largest keys of row m of ``q @ b.T`` over bank chunk c (unsorted,
    EMPTY-padded); grid (row blocks, chunks). Dot products accumulate in float32."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_query
    chunk_id = tl.program_id(1)
    start = chunk_id * chunk
    stop = tl.minimum(start + chunk, n_bank)
    slots = tl.arange(0, K_PAD)
    top = tl.full((BLOCK_M, K_PAD), EMPTY, tl.int64)
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    for n0 in range(start, stop, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < stop
        b_cols = b_ptr + cols.to(tl.int64)[None, :] * stride_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            ds = (d0 + tl.arange(0, BLOCK_D)).to(tl.int64)  # index * stride in 64 bits: any strides, any bank size
            d_ok = ds < dim
            q = tl.load(q_rows + ds[None, :] * stride_qd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            b = tl.load(b_cols + ds[:, None] * stride_bd, mask=d_ok[:, None] & col_ok[None, :], other=0.0)
            if UPCAST:
                q, b = q.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(q, b, acc, input_precision=INPUT_PRECISION)
        keys = tl.where(col_ok[None, :], _pack_keys(acc, cols), EMPTY)
        top = _fold(top, keys, slots)
    out = out_ptr + rows.to(tl.int64)[:, None] * (n_chunks * K_PAD) + chunk_id * K_PAD + slots[None, :]
    tl.store(out, top, mask=row_ok[:, None])


BLOCK_N = 64
BLOCK_D = 32


def block_m(k_pad: int) -> int:
    """Query rows per program: fewer when each row keeps many keys (registers)."""
    return 32 if k_pad <= 64 else 16


@on_input_device
def partial_topk_keys(query: torch.Tensor, bank: torch.Tensor, k_pad: int, chunk: int, n_chunks: int) -> torch.Tensor:
    """(Nq, n_chunks * k_pad) int64 keys: each bank chunk's k_pad best per query row.

    ``query`` (Nq, D) and ``bank`` (Nb, D): one dtype (float32, float16 or bfloat16), any
    strides; ``chunk`` a multiple of BLOCK_N, ``n_chunks * chunk >= Nb``, k_pad a power of two.
    """
    n_query, dim = query.shape
    out = torch.empty((n_query, n_chunks * k_pad), dtype=torch.int64, device=query.device)
    rows = block_m(k_pad)
    # Triton's interpreter multiplies bfloat16 tiles wrongly (3.9); float32 operands give the
    # same exact products that the GPU's bfloat16 dot accumulates in float32.
    upcast = query.dtype == torch.bfloat16 and triton_interpreted()
    grid = (triton.cdiv(n_query, rows), n_chunks)
    _partial_topk_kernel[grid](
        query, bank, out, n_query, bank.shape[0], dim, chunk, n_chunks,
        query.stride(0), query.stride(1), bank.stride(0), bank.stride(1),
        BLOCK_M=rows, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, K_PAD=k_pad,
        INPUT_PRECISION="ieee" if query.dtype == torch.float32 or upcast else "tf32", UPCAST=upcast,
        num_warps=4,
    )
    return out
