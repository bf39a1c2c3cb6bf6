"""3x3 stride-1 convolutions of channels-last frames by Winograd's F(2x2, 3x3), on the CPU.

Private to the ``residual_conv2plus1d`` op: its CPU backend runs the spatial convolution, and
that convolution's input gradient, through here where :func:`applies` says so. Each 2x2
output tile takes 16 products per channel pair instead of 36 multiply-adds: ``V = B^T d B``
of the input tiles, the 16 GEMMs ``M[p] = V[p] @ U[p]`` and ``y = A^T M A + bias``. Up to
FUSED_MAX_CHANNELS channels one C++ kernel does all three on blocks of tiles that stay in cache;
wider convolutions transform in C++ and leave the 16 GEMMs to one ``torch.bmm`` (MKL), whose
own blocking suits a U that no longer fits in cache. ``U = G g G^T`` (packed for the fused
kernel) of a weight that does not require grad (the frozen spatial filters) is computed once
and reused until the weight changes. In float32 its error against a float64 reference is about
that of oneDNN's (tests/test_residual_conv2plus1d_winograd.py); the larger F(4x4, 3x3) tiles
would need fewer products but lose about an order of magnitude in accuracy.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Optional, Tuple

import torch

from webda_kernels import _extension

# Both channel counts from this many: the narrowest ResNet-34 stage, the narrowest width
# benchmarked against oneDNN (benchmarks/bench_residual_conv2plus1d.py; results in
# benchmarks/results/cpu-xeon-2core/).
MIN_CHANNELS = 64
# Both channel counts up to this many: the fused kernel; above it the batched GEMM, because a
# wider U no longer stays in cache and the fused kernel reads it once per block of tiles where
# MKL's GEMM reads it once. Set by timing both paths at the stage shapes of
# benchmarks/bench_residual_conv2plus1d.py.
FUSED_MAX_CHANNELS = 128

_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
_KRON_G = torch.kron(_G, _G)  # (16, 9): U[p] = sum_k _KRON_G[p, k] g[k] over the 3x3 taps k


def applies(weight: torch.Tensor, stride, padding, dtype: torch.dtype) -> bool:
    """Whether a conv2d of ``weight`` (C, Cin, kh, kw) with this stride and padding runs here."""
    c, cin, kh, kw = weight.shape
    return (weight.device.type == "cpu" and dtype in (torch.float32, torch.float64) and (kh, kw) == (3, 3)
            and tuple(stride) == (1, 1) and padding[0] == padding[1] <= 2 and min(c, cin) >= MIN_CHANNELS
            and _extension.load("cpu") is not None)


# (id(weight), flipped) -> (weakref to the weight, its version, data pointer, U), oldest first; an
# entry leaves with its weight, or when the entries pass _CACHE_BYTES (a ResNet-34 video model's
# frozen filters take ~300 MiB both ways).
_CACHE: "OrderedDict[Tuple[int, bool], Tuple[weakref.ref, int, int, torch.Tensor]]" = OrderedDict()
_CACHE_BYTES = 512 << 20


def _fused(cin: int, c: int) -> bool:
    return max(cin, c) <= FUSED_MAX_CHANNELS


def _transformed(weight: torch.Tensor, flipped: bool) -> torch.Tensor:
    """U = G g G^T as (16, Cin, C) for ``weight`` (C, Cin, 3, 3); for the input gradient
    (``flipped``) of the weight rotated by 180 degrees with in and out swapped, (16, C, Cin).
    Where the fused kernel serves these channels, U packed into its column panels (1D)."""
    key = (id(weight), flipped)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == weight._version and hit[2] == weight.data_ptr():
        _CACHE.move_to_end(key)
        return hit[3]
    g = weight.detach()
    g = g.flip(2, 3).transpose(0, 1) if flipped else g  # (Cout', Cin', 3, 3)
    cout, cin = g.shape[:2]
    taps = g.permute(2, 3, 1, 0).reshape(9, -1)  # (9, Cin' * Cout')
    u = torch.mm(_KRON_G.to(g.dtype), taps).view(16, cin, cout)
    if _fused(cin, cout):
        ext, code = _extension.load("cpu"), _extension.dtype_code(u)
        packed = torch.empty(ext.winograd_packed_numel(cin, cout, code), dtype=u.dtype)
        ext.winograd_pack_weight(u.data_ptr(), packed.data_ptr(), cin, cout, code)
        u = packed
    if not weight.requires_grad:  # a fixed weight: keep U while the weight lives and is unchanged
        _CACHE[key] = (weakref.ref(weight, lambda _, k=key: _CACHE.pop(k, None)), weight._version,
                       weight.data_ptr(), u)
        while sum(entry[3].nbytes for entry in _CACHE.values()) > _CACHE_BYTES:
            _CACHE.popitem(last=False)
    return u


def _run(frames: torch.Tensor, u: torch.Tensor, c: int, bias: Optional[torch.Tensor], padding: int) -> torch.Tensor:
    """The convolution of channels-last ``frames`` (F, Cin, H, W) to ``c`` channels with
    ``_transformed``'s ``u``."""
    f, cin, h, w = frames.shape
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    ext, code = _extension.load("cpu"), _extension.dtype_code(frames)
    out = torch.empty((f, c, ho, wo), dtype=frames.dtype, memory_format=torch.channels_last)
    bias_ptr = 0 if bias is None else bias.data_ptr()
    if _fused(cin, c):
        ext.winograd_conv3x3(frames.data_ptr(), u.data_ptr(), bias_ptr, out.data_ptr(), f, h, w, cin, c, padding, code)
        return out
    tiles = f * -(-ho // 2) * -(-wo // 2)
    # V's 16 matrices one cache line apart from a multiple of 4 KiB, so that the transform's 16
    # stores of a tile do not compete for the same cache sets.
    stride = tiles * cin + 64 // frames.element_size()
    v = torch.empty(16 * stride, dtype=frames.dtype).as_strided((16, tiles, cin), (stride, cin, 1))
    ext.winograd_input_transform(frames.data_ptr(), v.data_ptr(), stride, f, h, w, cin, padding, code)
    m = torch.bmm(v, u)
    ext.winograd_output_transform(m.data_ptr(), bias_ptr, out.data_ptr(), f, h, w, c, padding, code)
    return out


def conv3x3(frames: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int) -> torch.Tensor:
    """``conv2d(frames, weight, bias, stride=1, padding=padding)`` (channels-last output);
    frames (F, Cin, H, W), weight (C, Cin, 3, 3), bias (C,) or None, 0 <= padding <= 2."""
    frames = frames.contiguous(memory_format=torch.channels_last)
    return _run(frames, _transformed(weight, False), weight.shape[0], None if bias is None else bias.contiguous(),
                padding)


def conv3x3_input_grad(grad: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """The gradient of :func:`conv3x3`'s frames (F, Cin, H, W) for its output's gradient ``grad``
    (F, C, Ho, Wo): the convolution of ``grad`` with the rotated, transposed weight, padding 2 - padding."""
    grad = grad.contiguous(memory_format=torch.channels_last)
    return _run(grad, _transformed(weight, True), weight.shape[1], None, 2 - padding)
