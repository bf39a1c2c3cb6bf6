"""Top-T bilinear attention (paper 3.4): ``e = src @ weight @ tgt.T``, ``s_i`` = sum of the
``top_t`` largest ``e[i, :]``, ``alpha = softmax(s / temperature)`` over the source batch.

Layers, top to bottom: the forward of each backend (reference, C++ CPU, Triton, CUDA), the
``webda::topt_attention`` custom op with its fake and its autograd, and the public
``topt_scores`` / ``topt_attention``.

Every backend's forward returns ``(out, indices, projected)``: ``out`` the scores or the
attention (src's dtype), ``indices`` (Ns, top_t) int64 the selected target rows of each
source row (descending similarity, ties to the lower index, NaN highest like torch.topk),
and ``projected = src @ weight`` (Ns, D) in the accumulation dtype (float64 for float64,
else float32). On the GPU backends, small problems (Ns, Nt <= FUSED_MAX_ROWS) project with a
matmul and run the rest (similarities, selection, sums, softmax) in one fused program, whose
work is then Ns x Nt x D; larger banks stream through ``streaming_topk`` and never hold the
Ns x Nt matrix.

The backward is shared by all backends: ``s_i`` depends on the selected ``e[i, j]`` with
derivative 1 (as torch.topk's backward routes it), so ``d e`` is ``g_i`` (the gradient of the
scores) on row i's selected entries and zero elsewhere, and ``d src = d e @ tgt @ weight.T``,
``d weight = src.T @ d e @ tgt``, ``d tgt = d e.T @ projected``, each the matmul the
reference's autograd runs. Under the softmax ``g`` sums to zero and the terms of ``d weight``
and ``d tgt`` cancel, so their error depends on how they are summed: summed as the reference
sums them, a backend whose forward matches the reference's gets its gradients too. ``d e`` is
built from the saved indices (nothing recomputes the Ns x Nt similarities; for half inputs the
selected ones are summed again in float32, to take the softmax's gradient from an unrounded
alpha) for blocks of source rows of at most ``BACKWARD_BLOCK`` entries, so the backward holds
no Ns x Nt tensor for large banks; its matmuls do the forward's Ns x Nt x D work twice.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import torch

from webda_kernels import _dispatch, _extension, _validate, reference
from webda_kernels._dtypes import FLOATING, GPU_FLOATING, accumulation_dtype, without_autocast
from webda_kernels.topk_similarity import GPU_MAX_BANK, GPU_MAX_K, streaming_topk

BACKWARD_BLOCK = 1 << 22  # entries of d e the backward holds at once (16 MiB in float32)

SPEC = _dispatch.OpSpec(
    name="topt_attention",
    dtypes={"cpu": FLOATING, "triton": GPU_FLOATING, "cuda": GPU_FLOATING},
    auto={"cpu": ("cpu",)},  # triton/cuda await a GPU benchmark before auto may pick them
)
# ``auto`` keeps the reference below this many similarities (Ns * Nt), where the streaming
# path's fixed costs outweigh what it saves. Set from benchmarks/bench_topt_attention.py
# (results in benchmarks/results/cpu-xeon-2core/).
CPU_MIN_PAIRS = 1 << 14
_SMALL_SPEC = dataclasses.replace(SPEC, auto={})

# Source and target batches up to this many rows run in one fused kernel (one program/block)
# after the projection.
FUSED_MAX_ROWS = 64


def _project(src: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``src @ weight`` in the accumulation dtype, (Ns, D)."""
    acc = accumulation_dtype(src.dtype)
    return src.to(acc) @ weight.to(acc)


def _normalise(scores: torch.Tensor, temperature: float, softmax: bool, dtype: torch.dtype) -> torch.Tensor:
    """The op's output from accumulation-dtype scores: the scores, or their softmax over the batch."""
    return (reference.temperature_softmax(scores, temperature) if softmax else scores).to(dtype)


def _fits_one_program(src: torch.Tensor, tgt: torch.Tensor) -> bool:
    return src.shape[0] <= FUSED_MAX_ROWS and tgt.shape[0] <= FUSED_MAX_ROWS


def _forward_streaming(src, tgt, weight, top_t, temperature, softmax, backend):
    """Project on the host, select top_t per row with ``streaming_topk`` of ``backend`` (the
    reference's is a full sort) and sum the selected similarities in the accumulation dtype."""
    projected = _project(src, weight)
    if backend in ("triton", "cuda") and (top_t > GPU_MAX_K or tgt.shape[0] > GPU_MAX_BANK):
        backend = "reference"  # beyond what the GPU streaming kernels keep on chip
    if backend in ("triton", "cuda"):
        # The GPU kernels read one dtype (tensor cores for half types): the query is rounded
        # to it, as the reference rounds src @ weight.
        query, bank = projected.to(tgt.dtype), tgt
    else:
        query, bank = projected, tgt.to(projected.dtype)  # CPU: half types are upcast
    values, indices = streaming_topk(query, bank, top_t, backend)
    if values.dtype == projected.dtype:
        scores = values.sum(dim=1)
    else:  # half-precision values from a GPU kernel: sum the selected similarities in float32
        scores = (bank[indices].to(projected.dtype) @ projected[:, :, None]).sum(dim=(1, 2))
    return _normalise(scores, temperature, softmax, src.dtype), indices, projected


def _forward_reference(src, tgt, weight, top_t, temperature, softmax):
    return _forward_streaming(src, tgt, weight, top_t, temperature, softmax, "reference")


def _forward_cpu(src, tgt, weight, top_t, temperature, softmax):
    return _forward_streaming(src, tgt, weight, top_t, temperature, softmax, "cpu")


def _forward_triton(src, tgt, weight, top_t, temperature, softmax):
    if not _fits_one_program(src, tgt):
        return _forward_streaming(src, tgt, weight, top_t, temperature, softmax, "triton")
    from webda_kernels.triton.topt_attention import topt_attention_fused

    projected = _project(src, weight)
    out, indices = topt_attention_fused(projected, tgt, top_t, temperature, softmax, src.dtype)
    return out, indices, projected


def _forward_cuda(src, tgt, weight, top_t, temperature, softmax):
    if not _fits_one_program(src, tgt):
        return _forward_streaming(src, tgt, weight, top_t, temperature, softmax, "cuda")
    projected = _project(src, weight)
    n_src, dim = projected.shape
    out = src.new_empty(n_src)
    indices = src.new_empty((n_src, top_t), dtype=torch.int64)
    _extension.load("cuda").topt_attention_fused(
        projected.data_ptr(), tgt.data_ptr(), out.data_ptr(), indices.data_ptr(), _extension.dtype_code(tgt),
        n_src, tgt.shape[0], dim, top_t, list(tgt.stride()), temperature, softmax, src.device.index,
        _extension.cuda_stream(src),
    )
    return out, indices, projected


_FORWARD = {
    "reference": _forward_reference,
    "cpu": _forward_cpu,
    "triton": _forward_triton,
    "cuda": _forward_cuda,
}


@torch.library.custom_op("webda::topt_attention", mutates_args=())
def topt_attention_op(
    src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, top_t: int, temperature: float, softmax: bool,
    backend: str,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, indices, projected)`` (see the module docstring); inputs already validated."""
    if src.numel() == 0 or tgt.numel() == 0:  # empty batch or D = 0: nothing for a kernel to do
        backend = "reference"
    return _FORWARD[backend](src, tgt, weight, top_t, temperature, softmax)


@topt_attention_op.register_fake
def _(src, tgt, weight, top_t, temperature, softmax, backend):
    n_src, dim = src.shape
    return (
        src.new_empty(n_src),
        src.new_empty((n_src, top_t), dtype=torch.int64),
        src.new_empty((n_src, dim), dtype=accumulation_dtype(src.dtype)),
    )


def _setup_context(ctx, inputs, output):
    src, tgt, weight, top_t, temperature, softmax, backend = inputs
    out, indices, projected = output
    ctx.mark_non_differentiable(indices, projected)
    ctx.save_for_backward(src, tgt, weight, out, indices, projected)
    ctx.temperature = temperature
    ctx.softmax = softmax


def _backward(ctx, grad_out, grad_indices, grad_projected):
    src, tgt, weight, out, indices, projected = ctx.saved_tensors
    need_src, need_tgt, need_weight = ctx.needs_input_grad[:3]
    acc = projected.dtype
    grad_scores = grad_out.to(acc)
    tgt_acc = tgt.to(acc)
    if ctx.softmax:
        alpha = out.to(acc)
        if out.dtype != acc:
            # out is alpha rounded to a half type, and the gradient below cancels, amplifying that
            # rounding: alpha again in acc, from the saved selection (s_i = projected_i . its rows' sum)
            scores = (projected * tgt_acc[indices].sum(dim=1)).sum(dim=1)
            alpha = reference.temperature_softmax(scores, ctx.temperature)
        # torch's own softmax backward, as the reference's autograd runs it: alpha * (g - sum(g * alpha))
        # cancels when one weight dominates, and its sum is more accurate than a plain float32 one.
        grad_scores = torch.ops.aten._softmax_backward_data(grad_scores, alpha, 0, acc) / ctx.temperature
    grad_src = grad_tgt = grad_weight = None
    pulled = grad_scores.new_empty(src.shape[0], tgt.shape[1])  # d (src @ weight)
    if need_tgt:
        grad_tgt = torch.zeros_like(tgt_acc)
    for rows in torch.arange(src.shape[0], device=src.device).split(max(1, BACKWARD_BLOCK // max(1, tgt.shape[0]))):
        # d e of these rows: g_i on row i's selected entries, zero elsewhere
        block = grad_scores.new_zeros(rows.numel(), tgt.shape[0])
        block.scatter_(1, indices[rows], grad_scores[rows, None].expand(-1, indices.shape[1]))
        if need_src or need_weight:
            pulled[rows] = block @ tgt_acc
        if need_tgt:
            grad_tgt += block.T @ projected[rows]
    if need_src:
        grad_src = (pulled @ weight.to(acc).T).to(src.dtype)
    if need_weight:
        grad_weight = (src.to(acc).T @ pulled).to(weight.dtype)
    if need_tgt:
        grad_tgt = grad_tgt.to(tgt.dtype)
    return grad_src, grad_tgt, grad_weight, None, None, None, None


topt_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _check_and_resolve(op: str, src, tgt, weight, top_t, backend: str) -> Tuple[str, int]:
    """Raise for bad arguments; returns the backend to run and ``top_t`` as a Python int."""
    _validate.floating_tensor(op, "src", src, ndim=2)
    _validate.floating_tensor(op, "tgt", tgt, ndim=2)
    _validate.floating_tensor(op, "weight", weight, ndim=2)
    _validate.same_device_and_dtype(op, "src", src, tgt=tgt, weight=weight)
    dim = src.shape[1]
    if tgt.shape[1] != dim:
        raise ValueError(f"{op}: tgt has {tgt.shape[1]} features per row but src has {dim}")
    if tuple(weight.shape) != (dim, dim):
        raise ValueError(f"{op}: weight must be ({dim}, {dim}) for src of {dim} features, got {tuple(weight.shape)}")
    top_t = _validate.integer(op, "top_t", top_t)
    if tgt.shape[0] == 0:
        raise ValueError(f"{op}: tgt is empty; top_t needs at least one target row")
    if not 1 <= top_t <= tgt.shape[0]:
        raise ValueError(f"{op}: top_t must be in [1, Nt = {tgt.shape[0]}], got {top_t}")
    spec = SPEC if src.shape[0] * tgt.shape[0] >= CPU_MIN_PAIRS else _SMALL_SPEC
    return _dispatch.resolve(spec, backend, src.device, src.dtype), top_t


def _temperature(value, dtype: torch.dtype) -> float:
    """``value`` if it is a positive float that the accumulation dtype of ``dtype`` inputs holds as a
    normal number (else the softmax input would be 0 or inf), else TypeError/ValueError."""
    temperature = _validate.finite_number("topt_attention", "temperature", value)
    if temperature <= 0:
        raise ValueError(f"topt_attention: temperature must be > 0, got {temperature}")
    acc = torch.finfo(accumulation_dtype(dtype))
    if not acc.tiny <= temperature <= acc.max:
        raise ValueError(f"topt_attention: temperature {temperature} cannot be represented in {acc.dtype}, the "
                         f"softmax's dtype for {dtype} inputs; use one in [{acc.tiny:.3g}, {acc.max:.3g}]")
    return temperature


def _reference(fn, src, tgt, weight, *args) -> torch.Tensor:
    """The reference ``fn`` run in the accumulation dtype (as every other backend computes), the result
    in ``src``'s dtype: a float16 similarity that overflows must not turn the answer into NaN."""
    acc = accumulation_dtype(src.dtype)
    return fn(src.to(acc), tgt.to(acc), weight.to(acc), *args).to(src.dtype)


def topt_scores(src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, top_t: int, backend: str = "auto") -> torch.Tensor:
    """Top-T similarity scores: ``s_i`` = sum of the ``top_t`` largest entries of row i of ``src @ weight @ tgt.T``.

    Args:
        src: (Ns, D) source (web) features.
        tgt: (Nt, D) target features, Nt >= 1; same device and dtype as ``src``.
        weight: (D, D) bilinear similarity matrix.
        top_t: how many of the largest similarities each row sums, 1 <= top_t <= Nt.
        backend: "auto", "reference", "cpu", "triton" or "cuda" (see ``available_backends()``).

    Returns:
        (Ns,) scores in ``src``'s dtype (accumulated in float32, float64 for float64); autocast
        does not change it (a similarity rounded to a half type ties and reorders).
        Differentiable in ``src``, ``tgt`` and ``weight``: the gradient of ``s_i`` reaches the
        ``top_t`` selected entries of row i (ties go to the lower target index; NaN ranks
        highest, as in torch.topk). Never holds the (Ns, Nt) matrix on the streaming paths.

    Raises:
        TypeError: a tensor is not floating, dtypes differ, or ``top_t`` is not an int.
        ValueError: wrong ranks or shapes, devices differ, ``tgt`` is empty, ``top_t`` is out of
            range, or ``backend`` cannot serve the inputs.
    """
    resolved, top_t = _check_and_resolve("topt_scores", src, tgt, weight, top_t, backend)
    with without_autocast(src.device):
        if resolved == "reference":  # plain torch autograd: no custom op to pay for
            return _reference(reference.topt_scores, src, tgt, weight, top_t)
        return topt_attention_op(src, tgt, weight, top_t, 1.0, False, resolved)[0]


def topt_attention(
    src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, top_t: int, temperature: float = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over a source batch: ``softmax(topt_scores(src, tgt, weight, top_t) / temperature)``.

    Args:
        src, tgt, weight, top_t, backend: as in :func:`topt_scores`.
        temperature: softmax temperature, a float > 0 that float32 (float64 for float64 inputs)
            holds as a normal number: at least 1.2e-38 (2.2e-308). A tiny temperature gives the
            limit, weight 1 on the highest score (shared among equal ones).

    Returns:
        (Ns,) weights in ``src``'s dtype that sum to 1 over the source batch; differentiable in
        ``src``, ``tgt`` and ``weight`` (see :func:`topt_scores`).

    Raises:
        TypeError, ValueError: as in :func:`topt_scores`; ValueError also if ``temperature`` is
            not a finite positive number in that range.
    """
    resolved, top_t = _check_and_resolve("topt_attention", src, tgt, weight, top_t, backend)
    temperature = _temperature(temperature, src.dtype)
    with without_autocast(src.device):
        if resolved == "reference":  # plain torch autograd: no custom op to pay for
            return _reference(reference.topt_attention, src, tgt, weight, top_t, temperature)
        return topt_attention_op(src, tgt, weight, top_t, temperature, True, resolved)[0]
