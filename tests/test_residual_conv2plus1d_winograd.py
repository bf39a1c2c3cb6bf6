"""The residual_conv2plus1d op's private Winograd F(2x2, 3x3) spatial convolution (its CPU
backend, webda_kernels/_winograd_conv3x3.py) against float64 conv2d: forward and input gradient,
odd sizes, every padding, both dtypes, the cached transformed weights (reused, and dropped when
the weight changes), and when the backend takes this path. The op through this path is checked
in tests/test_residual_conv2plus1d_op.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from webda_kernels import _extension
from webda_kernels import _winograd_conv3x3 as winograd
from webda_kernels.testing import assert_matches_reference, representable_randn

pytestmark = pytest.mark.skipif(_extension.load("cpu") is None, reason="the CPU extension is not built")

# (frames, Cin, C, H, W, padding): a 1x1 frame, outputs of odd and even sizes, one channel,
# channels past one vector (16 float32 lanes) and not a multiple of it, every padding; the fused
# kernel with several blocks of tiles and a partial column tile (3x50x70), and the batched-GEMM
# path past FUSED_MAX_CHANNELS (in, out or both).
SHAPES = [(1, 1, 1, 3, 3, 0), (2, 3, 5, 1, 1, 1), (3, 5, 7, 9, 6, 1), (1, 17, 33, 5, 7, 0), (1, 4, 4, 2, 3, 2),
          (2, 40, 24, 6, 5, 2), (4, 64, 64, 7, 7, 1), (3, 50, 70, 13, 11, 1), (1, 24, 129, 4, 5, 0),
          (2, 136, 130, 5, 6, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_residual_conv2plus1d_winograd_matches_float64_conv2d_and_its_input_gradient(shape, dtype):
    frames, cin, c, h, w, pad = shape
    torch.manual_seed(sum(shape))
    x = representable_randn(frames, cin, h, w, dtype=dtype)
    weight = representable_randn(c, cin, 3, 3, dtype=dtype, scale=(9 * cin) ** -0.5)
    bias = representable_randn(c, dtype=dtype)
    y = winograd.conv3x3(x.to(dtype), weight.to(dtype), bias.to(dtype), pad)
    y64 = F.conv2d(x, weight, bias, padding=pad)
    assert y.dtype == dtype and y.shape == y64.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert_matches_reference(y, F.conv2d(x.to(dtype), weight.to(dtype), bias.to(dtype), padding=pad), y64)

    grad = representable_randn(*y64.shape, dtype=dtype)
    gx = winograd.conv3x3_input_grad(grad.to(dtype), weight.to(dtype), pad)
    gx64 = torch.nn.grad.conv2d_input(x.shape, weight, grad, padding=pad)
    gx_same = torch.nn.grad.conv2d_input(x.shape, weight.to(dtype), grad.to(dtype), padding=pad)
    assert gx.shape == x.shape
    assert_matches_reference(gx, gx_same, gx64, "grad", what="grad x")


def test_residual_conv2plus1d_winograd_takes_any_frame_layout():
    x = torch.randn(3, 6, 7, 5)
    weight = torch.randn(4, 6, 3, 3)
    want = F.conv2d(x, weight, padding=1)
    for view in (x, x.contiguous(memory_format=torch.channels_last), torch.randn(3, 12, 7, 5)[:, ::2]):
        view.copy_(x)
        torch.testing.assert_close(winograd.conv3x3(view, weight, None, 1), want, rtol=1e-5, atol=1e-5)


def test_residual_conv2plus1d_winograd_reuses_a_frozen_weights_transform_until_it_changes():
    x = torch.randn(2, 8, 5, 5)
    weight = torch.randn(8, 8, 3, 3)
    first = winograd._transformed(weight, False)
    assert winograd._transformed(weight, False) is first  # cached
    assert winograd._transformed(weight, True) is not first  # the flipped one is its own entry
    with torch.no_grad():
        weight.mul_(-1)  # in place: a new version
    assert winograd._transformed(weight, False) is not first
    torch.testing.assert_close(winograd.conv3x3(x, weight, None, 1), F.conv2d(x, weight, padding=1),
                               rtol=1e-5, atol=1e-5)
    key = (id(weight), False)
    del weight
    assert key not in winograd._CACHE  # the entry leaves with its weight


def test_residual_conv2plus1d_winograd_does_not_cache_a_trained_weight():
    weight = torch.randn(8, 8, 3, 3, requires_grad=True)
    assert winograd._transformed(weight, False) is not winograd._transformed(weight, False)


def test_residual_conv2plus1d_winograd_paths_split_at_fused_max_channels():
    assert winograd._fused(winograd.FUSED_MAX_CHANNELS, winograd.FUSED_MAX_CHANNELS)
    assert not winograd._fused(winograd.FUSED_MAX_CHANNELS, winograd.FUSED_MAX_CHANNELS + 1)
    narrow, wide = torch.randn(8, 8, 3, 3), torch.randn(8, winograd.FUSED_MAX_CHANNELS + 1, 3, 3)
    assert winograd._transformed(narrow, False).dim() == 1  # packed for the fused kernel
    assert winograd._transformed(wide, False).shape == (16, winograd.FUSED_MAX_CHANNELS + 1, 8)  # U for bmm


def test_residual_conv2plus1d_winograd_applies_to_wide_3x3_stride_1_cpu_convolutions_in_float32_and_float64():
    wide = torch.empty(winograd.MIN_CHANNELS, winograd.MIN_CHANNELS, 3, 3)
    assert winograd.applies(wide, [1, 1], [1, 1], torch.float32)
    assert winograd.applies(wide, [1, 1], [0, 0], torch.float64)
    assert not winograd.applies(wide, [2, 2], [1, 1], torch.float32)  # stride 2
    assert not winograd.applies(wide, [1, 1], [1, 0], torch.float32)  # unequal padding
    assert not winograd.applies(wide, [1, 1], [3, 3], torch.float32)  # padding past the tile
    assert not winograd.applies(wide, [1, 1], [1, 1], torch.float16)
    assert not winograd.applies(wide[:, :, :1], [1, 1], [1, 1], torch.float32)  # 1x3
    assert not winograd.applies(wide[:, :-1], [1, 1], [1, 1], torch.float32)  # narrow input
