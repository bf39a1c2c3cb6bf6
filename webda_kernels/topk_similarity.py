"""Streaming top-k similarity search: the k largest ``query @ weight @ bank.T`` per query row.

Used to remove web items that duplicate target items (cosine similarity above a threshold,
k = 1) over banks of up to millions of rows, and by ``topt_attention`` for large banks.

Layers, top to bottom: the streaming top-k of each backend (reference, C++ CPU, Triton,
CUDA) behind ``streaming_topk``, the ``webda::topk_similarity`` custom op with its fake, and
the public ``topk_similarity``. The op is not differentiable.

Rank order everywhere is that of the reference (a stable descending ``torch.sort``): NaN
above everything, then larger values, then the lower bank index among equal values
(-0.0 and 0.0 are equal). The fast backends never hold the (Nq, Nb) matrix:

- ``cpu``: one C++ kernel computes the similarities block by block in registers and folds
  them into per-thread running top-k heaps (csrc/cpu/topk_similarity.cpp);
- ``triton`` / ``cuda``: one kernel computes similarity tiles in registers / shared memory
  and keeps a running top-k per row and bank chunk as packed 64-bit keys (format in
  triton/topk_similarity.py); the (Nq, chunks * k) keys are merged by ``torch.topk`` and decoded.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from webda_kernels import _dispatch, _extension, _validate, reference
from webda_kernels._dtypes import FLOATING, GPU_FLOATING, accumulation_dtype

SPEC = _dispatch.OpSpec(
    name="topk_similarity",
    dtypes={"cpu": FLOATING, "triton": GPU_FLOATING, "cuda": GPU_FLOATING},
    auto={"cpu": ("cpu",)},  # cuda/triton await a GPU benchmark before auto may pick them
)
# ``auto`` picks "cpu" only for banks of at least max(CPU_MIN_BANK, CPU_MIN_BANK_PER_K * k)
# rows: below that most scores enter the running top-k and the heap work loses to the
# reference's sort. Set from benchmarks/bench_topk_similarity.py (its paper shape, Nb = 32,
# falls below; results in benchmarks/results/cpu-xeon-2core/).
CPU_MIN_BANK = 128
CPU_MIN_BANK_PER_K = 4
_SMALL_SPEC = dataclasses.replace(SPEC, auto={})

# The CPU backend reads the bank in chunks of at most _CPU_CHUNK_ELEMENTS elements, for query
# blocks of at most _CPU_MAX_ROWS rows, and merges the chunks' results; a bank it has to copy
# (half types upcast to float32, rows not contiguous along D) goes _CPU_COPY_CHUNK_ELEMENTS at a
# time, so the extra memory stays small.
_CPU_CHUNK_ELEMENTS = 1 << 30
_CPU_COPY_CHUNK_ELEMENTS = 1 << 21
_CPU_MAX_ROWS = 1024
# The GPU kernels keep k (rounded up to a power of two) keys per row on chip.
GPU_MAX_K = 256
# Bank indices travel in 32 bits of a packed key.
GPU_MAX_BANK = 2**31 - 1


def _streaming_reference(query: torch.Tensor, bank: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return reference.topk_similarity(query, bank, k)


def _streaming_cpu(query: torch.Tensor, bank: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    acc = accumulation_dtype(query.dtype)
    n_query, dim = query.shape
    n_bank = bank.shape[0]
    module = _extension.load("cpu")
    code = _extension.DTYPE_CODES[acc]
    query = query.to(acc).contiguous()
    # The kernel reads rows contiguous along D: other banks (half types, transposed, expanded)
    # are copied, one small chunk at a time.
    copied = bank.dtype != acc or bank.stride(-1) != 1 or (n_bank > 1 and bank.stride(0) < dim)
    chunk = max(k, (_CPU_COPY_CHUNK_ELEMENTS if copied else _CPU_CHUNK_ELEMENTS) // max(dim, 1))
    values, indices = [], []
    for r0 in range(0, n_query, _CPU_MAX_ROWS):
        block = query[r0:r0 + _CPU_MAX_ROWS]
        best = None
        for c0 in range(0, n_bank, chunk):
            part = bank[c0:c0 + chunk]
            if copied:
                part = part.to(acc, memory_format=torch.contiguous_format, copy=True)
            found = _search_cpu(module, block, part, min(k, part.shape[0]), code)
            best = found if best is None else _merge_sorted(best, (found[0], found[1] + c0), k)
        values.append(best[0])
        indices.append(best[1])
    return torch.cat(values).to(bank.dtype), torch.cat(indices)


def _search_cpu(module, query: torch.Tensor, bank: torch.Tensor, k: int, code: int):
    """The fused kernel on one query block and one bank chunk (both contiguous along D)."""
    values = query.new_empty((query.shape[0], k))
    indices = query.new_empty((query.shape[0], k), dtype=torch.int64)
    row_stride = bank.stride(0) if bank.shape[0] > 1 else query.shape[1]
    module.topk_similarity_search(query.data_ptr(), bank.data_ptr(), row_stride,
                                  query.shape[0], bank.shape[0], query.shape[1], k, values.data_ptr(),
                                  indices.data_ptr(), code)
    return values, indices


def _merge_sorted(first, second, k: int):
    """The k best of two sorted (values, indices) results whose indices in ``first`` are all lower:
    a stable descending sort keeps the reference's order (NaN first, ties to the lower index)."""
    values = torch.cat([first[0], second[0]], dim=1)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    return values.gather(1, order), torch.cat([first[1], second[1]], dim=1).gather(1, order)


def _gpu_chunks(n_query: int, n_bank: int, rows_per_block: int, cols_per_tile: int, device: torch.device):
    """(chunk, n_chunks): bank rows per chunk (whole tiles) and how many chunks, so that the
    (row blocks x chunks) grid fills the GPU about four times over."""
    tiles = -(-n_bank // cols_per_tile)
    programs = 4 * (torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1)
    row_blocks = -(-n_query // rows_per_block)
    tiles_per_chunk = -(-tiles // max(1, min(tiles, -(-programs // row_blocks))))
    return tiles_per_chunk * cols_per_tile, -(-tiles // tiles_per_chunk)


def _decode_keys(keys: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Values (as ``dtype``) and int64 indices of packed keys (format: triton/topk_similarity.py)."""
    ordered = (keys >> 32).to(torch.int32)
    values = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).view(torch.float32)
    return values.to(dtype), 0xFFFFFFFF - (keys & 0xFFFFFFFF)


def _merge_chunks(partial: torch.Tensor, k: int, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row's chunk keys (Nq, chunks * k_pad), sorted, decoded."""
    return _decode_keys(torch.topk(partial, k, dim=1).values, dtype)


def _k_pad(k: int) -> int:
    return 1 << (k - 1).bit_length()


def _streaming_triton(query: torch.Tensor, bank: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    from webda_kernels.triton import topk_similarity as kernels

    k_pad = _k_pad(k)
    chunk, n_chunks = _gpu_chunks(query.shape[0], bank.shape[0], kernels.block_m(k_pad), kernels.BLOCK_N, query.device)
    partial = kernels.partial_topk_keys(query, bank, k_pad, chunk, n_chunks)
    return _merge_chunks(partial, k, query.dtype)


# Query rows per block and bank rows per tile of csrc/cuda/topk_similarity.cu; it keeps at
# least one warp's worth (32) of keys per row.
_CUDA_ROWS, _CUDA_COLS, _CUDA_MIN_K_PAD = 16, 64, 32


def _streaming_cuda(query: torch.Tensor, bank: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    (n_query, dim), n_bank = query.shape, bank.shape[0]
    k_pad = max(_k_pad(k), _CUDA_MIN_K_PAD)
    chunk, n_chunks = _gpu_chunks(n_query, n_bank, _CUDA_ROWS, _CUDA_COLS, query.device)
    partial = torch.empty((n_query, n_chunks * k_pad), dtype=torch.int64, device=query.device)
    _extension.load("cuda").topk_similarity_partial(
        query.data_ptr(), bank.data_ptr(), partial.data_ptr(), _extension.dtype_code(query), n_query, n_bank, dim,
        list(query.stride()), list(bank.stride()), k_pad, chunk, n_chunks, query.device.index,
        _extension.cuda_stream(query),
    )
    return _merge_chunks(partial, k, query.dtype)


_STREAMING = {
    "reference": _streaming_reference,
    "cpu": _streaming_cpu,
    "triton": _streaming_triton,
    "cuda": _streaming_cuda,
}


def streaming_topk(query: torch.Tensor, bank: torch.Tensor, k: int, backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Values (Nq, k) and int64 indices (Nq, k) of the k largest ``query @ bank.T`` per row.

    Internal entry point shared with ``topt_attention``: no validation, no autograd.
    ``query`` (Nq, D) and ``bank`` (Nb, D) have one floating dtype and device and any
    strides; 1 <= k <= Nb; ``backend`` is a concrete backend name that serves them
    ("reference", "cpu", "triton" or "cuda"; the GPU ones need k <= GPU_MAX_K).
    Rows are sorted in the reference's rank order (module docstring); values have the
    inputs' dtype, computed in float32 (float64 for float64).
    """
    if query.shape[0] == 0:
        return query.new_empty((0, k)), query.new_empty((0, k), dtype=torch.int64)
    return _STREAMING[backend](query, bank, k)


@torch.library.custom_op("webda::topk_similarity", mutates_args=())
def topk_similarity_op(
    query: torch.Tensor, bank: torch.Tensor, k: int, weight: Optional[torch.Tensor], backend: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` of the public op; inputs already validated."""
    projected = query if weight is None else query @ weight
    return streaming_topk(projected, bank, k, backend)


@topk_similarity_op.register_fake
def _(query, bank, k, weight, backend):
    return query.new_empty((query.shape[0], k)), query.new_empty((query.shape[0], k), dtype=torch.int64)


def _check_inputs(query, bank, k, weight) -> int:
    """Raise for bad arguments; returns ``k`` as a Python int."""
    op = "topk_similarity"
    _validate.floating_tensor(op, "query", query, ndim=2)
    _validate.floating_tensor(op, "bank", bank, ndim=2)
    if weight is not None:
        _validate.floating_tensor(op, "weight", weight, ndim=2)
    _validate.same_device_and_dtype(op, "query", query, bank=bank, weight=weight)
    dim = query.shape[1]
    if bank.shape[1] != dim:
        raise ValueError(f"{op}: bank has {bank.shape[1]} features per row but query has {dim}; they must match")
    if weight is not None and tuple(weight.shape) != (dim, dim):
        raise ValueError(f"{op}: weight must have shape ({dim}, {dim}) for {dim}-feature rows, got {tuple(weight.shape)}")
    if bank.shape[0] == 0:
        raise ValueError(f"{op}: bank is empty (shape {tuple(bank.shape)}); it needs at least k rows")
    k = _validate.integer(op, "k", k)
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"{op}: k must be in [1, {bank.shape[0]}] (the bank's rows), got {k}")
    if torch.is_grad_enabled():
        for name, t in (("query", query), ("bank", bank), ("weight", weight)):
            if t is not None and t.requires_grad:
                raise ValueError(
                    f"{op} is not differentiable, but {name} requires grad; call it under torch.no_grad() "
                    f"or pass {name}.detach()"
                )
    return k


def topk_similarity(
    query: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    weight: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k largest bilinear similarities ``query @ weight @ bank.T`` of each query row.

    Not differentiable: inputs that require grad are refused unless gradients are disabled
    (``torch.no_grad()``). The fast backends stream over the bank and never hold the
    (Nq, Nb) similarity matrix. Extra memory: on the CPU, O(Nq * k) per thread, plus one
    converted chunk for a bank it must copy (half types, rows not contiguous along D); on
    the GPU, O(Nq * k) per bank chunk.

    Args:
        query: (Nq, D) floating tensor, any strides.
        bank: (Nb, D), Nb >= 1, same dtype and device as ``query``.
        k: how many per row, 1 <= k <= Nb.
        weight: (D, D) bilinear weight, or None for the identity (plain dot products).
        backend: "auto", "reference", "cpu", "triton" or "cuda" (see ``available_backends()``).
            ``auto`` picks "cpu" for CPU tensors when Nb >= max(CPU_MIN_BANK,
            CPU_MIN_BANK_PER_K * k), else the reference. "triton" and "cuda" serve
            float32/float16/bfloat16 with k <= GPU_MAX_K and Nb <= GPU_MAX_BANK; "cpu" serves
            every floating dtype (half types computed in float32).

    Returns:
        ``(values, indices)``: values (Nq, k) in the inputs' dtype and int64 indices (Nq, k)
        into ``bank``, each row sorted by descending similarity, equal values by ascending
        index; NaN similarities rank above everything (as in ``torch.sort``). Similarities
        are accumulated in float32 (float64 for float64 inputs).

    Raises:
        TypeError: a non-tensor or non-floating input, mixed dtypes, or a non-int ``k``.
        ValueError: wrong ranks, mismatched D, a ``weight`` that is not (D, D), an empty
            bank, ``k`` outside [1, Nb], mixed devices, an input that requires grad while
            gradients are enabled, or a ``backend`` that cannot serve the inputs.
    """
    k = _check_inputs(query, bank, k, weight)
    spec = SPEC if bank.shape[0] >= max(CPU_MIN_BANK, CPU_MIN_BANK_PER_K * k) else _SMALL_SPEC
    resolved = _dispatch.resolve(spec, backend, query.device, query.dtype)
    if resolved in ("triton", "cuda") and (k > GPU_MAX_K or bank.shape[0] > GPU_MAX_BANK):
        raise ValueError(
            f"topk_similarity: backend {resolved!r} serves k <= {GPU_MAX_K} and Nb <= {GPU_MAX_BANK}, "
            f"got k={k}, Nb={bank.shape[0]}; use backend='cpu' or 'reference'"
        )
    return topk_similarity_op(query, bank, k, weight, resolved)
