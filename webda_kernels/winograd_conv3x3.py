"""3x3 stride-1 convolutions of channels-last frames by Winograd's F(2x2, 3x3), on the CPU.

The (2+1)D block's CPU backend runs its spatial convolution, and that convolution's input
gradient, through here where it beats oneDNN's direct convolution (:func:`applies`). Each
2x2 output tile takes 16 products per channel pair instead of 36 multiply-adds: the C++
module transforms the input tiles (``V = B^T d B``) and the products (``y = A^T M A + bias``),
and the 16 GEMMs ``M[p] = V[p] @ U[p]`` are one ``torch.bmm`` (MKL). ``U = G g G^T`` of a
weight that does not require grad (the frozen spatial filters) is computed once and reused
until the weight changes. In float32 its error against a float64 reference is about that of
oneDNN's (tests/test_winograd_conv3x3.py); F(4x4, 3x3) would be faster but ~20x less accurate.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Optional, Tuple

import torch

from webda_kernels import _extension

# Both channel counts from this many: below it oneDNN's direct convolution is as fast (the
# transforms' memory traffic outweighs the saved products). CPU, float32, 2 threads, 24 frames:
# C=64 @ 28x28 0.8x of oneDNN, C=128 @ 14x14 1.2x, 256 @ 7x7 1.2x, 512 @ 4x4 1.9x.
MIN_CHANNELS = 128

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


def _transformed(weight: torch.Tensor, flipped: bool) -> torch.Tensor:
    """U = G g G^T as (16, Cin, C) for ``weight`` (C, Cin, 3, 3); for the input gradient
    (``flipped``) of the weight rotated by 180 degrees with in and out swapped, (16, C, Cin)."""
    key = (id(weight), flipped)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == weight._version and hit[2] == weight.data_ptr():
        _CACHE.move_to_end(key)
        return hit[3]
    g = weight.detach()
    g = g.flip(2, 3).transpose(0, 1) if flipped else g  # (Cout', Cin', 3, 3)
    taps = g.permute(2, 3, 1, 0).reshape(9, -1)  # (9, Cin' * Cout')
    u = torch.mm(_KRON_G.to(g.dtype), taps).view(16, g.shape[1], g.shape[0])
    if not weight.requires_grad:  # a fixed weight: keep U while the weight lives and is unchanged
        _CACHE[key] = (weakref.ref(weight, lambda _, k=key: _CACHE.pop(k, None)), weight._version,
                       weight.data_ptr(), u)
        while sum(entry[3].nbytes for entry in _CACHE.values()) > _CACHE_BYTES:
            _CACHE.popitem(last=False)
    return u


def _run(frames: torch.Tensor, u: torch.Tensor, bias: Optional[torch.Tensor], padding: int) -> torch.Tensor:
    f, cin, h, w = frames.shape
    c = u.shape[2]
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    tiles = f * -(-ho // 2) * -(-wo // 2)
    ext, code = _extension.load("cpu"), _extension.dtype_code(frames)
    v = torch.empty((16, tiles, cin), dtype=frames.dtype)
    ext.winograd_input_transform(frames.data_ptr(), v.data_ptr(), f, h, w, cin, padding, code)
    m = torch.bmm(v, u)
    out = torch.empty((f, c, ho, wo), dtype=frames.dtype, memory_format=torch.channels_last)
    ext.winograd_output_transform(m.data_ptr(), 0 if bias is None else bias.data_ptr(), out.data_ptr(), f, h, w, c,
                                  padding, code)
    return out


def conv3x3(frames: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int) -> torch.Tensor:
    """``conv2d(frames, weight, bias, stride=1, padding=padding)`` (channels-last output);
    frames (F, Cin, H, W), weight (C, Cin, 3, 3), bias (C,) or None, 0 <= padding <= 2."""
    frames = frames.contiguous(memory_format=torch.channels_last)
    return _run(frames, _transformed(weight, False), None if bias is None else bias.contiguous(), padding)


def conv3x3_input_grad(grad: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """The gradient of :func:`conv3x3`'s frames (F, Cin, H, W) for its output's gradient ``grad``
    (F, C, Ho, Wo): the convolution of ``grad`` with the rotated, transposed weight, padding 2 - padding."""
    grad = grad.contiguous(memory_format=torch.channels_last)
    return _run(grad, _transformed(weight, True), None, 2 - padding)
