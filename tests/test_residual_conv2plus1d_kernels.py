"""Fused temporal kernels of the (2+1)D block (C++ CPU, Triton, CUDA) against the reference.

Each backend's ``_TEMPORAL`` pair (forward, backward) is checked on its own, in the layout the
op hands it (channels_last_3d), against ``webda_kernels.reference.residual_conv2plus1d`` with
an identity 1x1 spatial conv: that computes exactly ``act(z + conv_t(z) + bias)``.

Relu gradients are compared with one relu mask shared by every implementation (the float64
forward's y, rounded to the dtype): through the whole op, rounding in half precision flips
the sign of pre-activations near zero differently in each implementation, and one flipped
mask entry moves a gradient by a whole grad_y entry. Triton runs under the interpreter on
CPU (tests/conftest.py), so its sizes stay tiny there.
"""

import pytest
import torch

from webda_kernels import _dispatch, _extension, reference
from webda_kernels.residual_conv2plus1d import _TEMPORAL, SPEC
from webda_kernels.testing import DTYPES, GPU, assert_matches_reference

CL3D = torch.channels_last_3d


def _backends(cpu: bool = True):
    """(backend, device) pairs the machine can run: cpu with the extension, triton on the GPU or
    interpreted, cuda on a GPU with the extension."""
    cases = []
    if cpu and "cpu" in _dispatch.serving_backends(SPEC, torch.device("cpu"), torch.float32):
        cases.append(pytest.param("cpu", "cpu", id="cpu"))
    triton_device = "cuda" if GPU else ("cpu" if _dispatch.triton_interpreted() else None)
    if triton_device and _dispatch.triton_importable():
        cases.append(pytest.param("triton", triton_device, id=f"triton-{triton_device}"))
    cases.append(pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.skipif(
        not (GPU and "cuda" in _dispatch.serving_backends(SPEC, torch.device("cuda"), torch.float32)),
        reason="needs a GPU and the CUDA extension")))
    return cases


# (N, C, T, H, W, kt). GPU kernels: T = 1 (every tap but the centre falls off), kt > T, odd
# channel counts, C above one 64-channel tile, and enough rows for several weight-gradient splits.
GPU_SHAPES = [(1, 1, 1, 1, 1, 1), (1, 3, 1, 2, 3, 3), (2, 3, 2, 1, 5, 5), (2, 17, 3, 2, 3, 3), (1, 33, 12, 1, 7, 3),
              (1, 65, 3, 2, 2, 3)]
# CPU kernel: T = 1 and kt > T, C past one vector, past a column tile and not a multiple of
# either, rows per clip not a multiple of the micro-tile, enough rows for several chunks; from
# 128 channels with kt = 3 the F(2, 3) kernel: T = 1, 2 and 3 (pairs of frames, one half-empty),
# a partial column tile, C = 160, whose weight-gradient buffer is past kSmallBufferBytes (threads
# then split its tiles, not the rows); and C = 272, whose packed weights are past
# kCachedWeightBytes (direct kernel, threads split column tiles, not rows).
CPU_SHAPES = [(1, 1, 1, 1, 1, 1), (2, 3, 1, 1, 5, 3), (1, 5, 2, 1, 7, 5), (2, 17, 3, 1, 6, 3), (1, 33, 12, 1, 7, 3),
              (2, 64, 5, 1, 49, 3), (1, 100, 4, 1, 3, 5), (1, 130, 1, 1, 7, 3), (2, 128, 2, 1, 5, 3),
              (2, 160, 3, 1, 20, 3), (1, 144, 3, 1, 4, 5), (1, 272, 3, 1, 10, 3)]


def _cases():
    for case in _backends():
        backend, device = case.values
        shapes = CPU_SHAPES if backend == "cpu" else GPU_SHAPES
        for dtype in (d for d in DTYPES if d in SPEC.dtypes[backend]):  # CUDA's float64: see the last test
            for shape in shapes:
                yield pytest.param(backend, device, dtype, shape, marks=case.marks,
                                   id=f"{case.id}-{str(dtype)[6:]}-{'x'.join(map(str, shape))}")


def _inputs(shape, dtype, device, has_bias):
    n, c, t, h, w, kt = shape
    z = torch.randn(n, c, t, h, w, dtype=dtype, device=device).contiguous(memory_format=CL3D)
    # Weights scaled like a trained temporal conv so y is O(1).
    weight = (torch.randn(c, c, kt, dtype=torch.float32, device=device) / (c * kt) ** 0.5).to(dtype)
    bias = torch.randn(c, dtype=dtype, device=device) if has_bias else None
    grad_y = torch.randn(n, c, t, h, w, dtype=dtype, device=device).contiguous(memory_format=CL3D)
    return z, weight, bias, grad_y


def _reference(z, weight, bias, relu, grad_y, mask=None):
    """(y, grad_z, grad_weight, grad_bias) of the reference (identity spatial conv) on copies of
    the inputs; under relu the gradient goes through where ``mask`` > 0 (default: its own y)."""
    z, weight, bias = (None if t is None else t.detach().clone().requires_grad_() for t in (z, weight, bias))
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)[:, :, None, None]
    linear = reference.residual_conv2plus1d(z, eye, weight, None, bias)
    y = torch.relu(linear) if relu else linear
    if relu:
        grad_y = torch.where((y if mask is None else mask) > 0, grad_y, 0.0)
    linear.backward(grad_y)
    return (y.detach(), z.grad, weight.grad, None if bias is None else bias.grad)


def _double(t):
    return None if t is None else t.double()


@pytest.mark.parametrize("relu,has_bias", [(False, False), (True, True)], ids=["plain", "relu-bias"])
@pytest.mark.parametrize("backend,device,dtype,shape", list(_cases()))
def test_residual_conv2plus1d_kernels_forward_backward_match_reference(backend, device, dtype, shape, relu, has_bias):
    torch.manual_seed(sum(shape) + relu)
    forward, backward = _TEMPORAL[backend]
    z, weight, bias, grad_y = _inputs(shape, dtype, device, has_bias)
    y = forward(z, weight, bias, relu)
    y_same = _reference(z, weight, bias, relu, grad_y)[0]
    y64 = _reference(z.double(), weight.double(), _double(bias), relu, grad_y.double())[0]
    assert y.dtype == dtype and y.shape == z.shape and y.is_contiguous(memory_format=CL3D)
    assert_matches_reference(y, y_same, y64, "output", what="y")

    mask = y64.to(dtype).contiguous(memory_format=CL3D) if relu else None
    grads = backward(grad_y, z, mask, weight, relu, True, has_bias)
    same = _reference(z, weight, bias, relu, grad_y, mask)[1:]
    exact = _reference(z.double(), weight.double(), _double(bias), relu, grad_y.double(), _double(mask))[1:]
    assert grads[0].is_contiguous(memory_format=CL3D)
    for label, got, want_same, want in zip(("grad z", "grad weight", "grad bias"), grads, same, exact):
        if want is None:
            assert got is None, label
            continue
        assert got.dtype == dtype and got.shape == want.shape, label
        assert_matches_reference(got, want_same, want, "grad", what=label)


@pytest.mark.parametrize("backend,device", _backends(cpu=False))
def test_residual_conv2plus1d_kernels_weight_grad_over_many_row_splits(backend, device, monkeypatch):
    # 210 rows; Triton gets few programs so that each sums several 64-row tiles and the last
    # split is partial. (CUDA's splits of several 32-row chunks are met at the stage shape below.)
    import webda_kernels.triton.residual_conv2plus1d as triton_kernels

    monkeypatch.setattr(triton_kernels, "WEIGHT_GRAD_PROGRAMS", 8)
    z, weight, bias, grad_y = _inputs((2, 17, 3, 5, 7, 3), torch.float32, device, True)
    y64 = _reference(z.double(), weight.double(), bias.double(), True, grad_y.double())[0]
    mask = y64.float().contiguous(memory_format=CL3D)
    _, grad_weight, grad_bias = _TEMPORAL[backend][1](grad_y, z, mask, weight, True, True, True)
    same = _reference(z, weight, bias, True, grad_y, mask)
    exact = _reference(z.double(), weight.double(), bias.double(), True, grad_y.double(), mask.double())
    assert_matches_reference(grad_weight, same[2], exact[2], "grad", what="grad_weight")
    assert_matches_reference(grad_bias, same[3], exact[3], "grad", what="grad_bias")


@pytest.mark.parametrize("backend,device", _backends())
def test_residual_conv2plus1d_kernels_skip_unrequested_grads_and_empty_input(backend, device):
    forward, backward = _TEMPORAL[backend]
    z, weight, _, grad_y = _inputs((2, 5, 3, 2, 2, 3), torch.float32, device, False)
    grad_z, grad_weight, grad_bias = backward(grad_y, z, None, weight, False, False, False)
    assert grad_weight is None and grad_bias is None
    assert torch.equal(grad_z, backward(grad_y, z, None, weight, False, True, True)[0])
    want = _reference(z.double(), weight.double(), None, False, grad_y.double())[1]
    same = _reference(z, weight, None, False, grad_y)[1]
    assert_matches_reference(grad_z, same, want, "grad", what="grad_z")

    empty = torch.empty(0, 5, 3, 2, 2, device=device).contiguous(memory_format=CL3D)
    assert forward(empty, weight, None, True).shape == empty.shape
    grad_z, grad_weight, grad_bias = backward(empty, empty, empty, weight, True, True, True)
    assert grad_z.shape == empty.shape
    assert torch.equal(grad_weight, torch.zeros_like(weight)) and torch.equal(grad_bias, torch.zeros(5, device=device))


@pytest.mark.skipif(not GPU, reason="needs a GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=lambda d: str(d)[6:])
def test_residual_conv2plus1d_kernels_at_a_resnet_stage_shape(backend, dtype):
    if backend not in _dispatch.serving_backends(SPEC, torch.device("cuda"), dtype):
        pytest.skip(f"{backend} unavailable")
    # ResNet-34 stage 3 of a 12-frame chunk, batch 2: many tiles in every direction.
    z, weight, bias, grad_y = _inputs((2, 256, 12, 14, 14, 3), dtype, "cuda", True)
    forward, backward = _TEMPORAL[backend]
    y64 = _reference(z.double(), weight.double(), bias.double(), True, grad_y.double())[0]
    assert_matches_reference(forward(z, weight, bias, True), _reference(z, weight, bias, True, grad_y)[0], y64,
                             "output", what="y")
    mask = y64.to(dtype).contiguous(memory_format=CL3D)
    grads = backward(grad_y, z, mask, weight, True, True, True)
    same = _reference(z, weight, bias, True, grad_y, mask)[1:]
    exact = _reference(z.double(), weight.double(), bias.double(), True, grad_y.double(), mask.double())[1:]
    for got, s, e, what in zip(grads, same, exact, ("grad_z", "grad_weight", "grad_bias")):
        assert_matches_reference(got, s, e, "grad", what=what)


@pytest.mark.skipif(not GPU or _extension.load("cuda") is None, reason="needs a GPU and the CUDA extension")
def test_residual_conv2plus1d_kernels_cuda_float64_matches_reference():
    # The CUDA kernels also take float64 (FMA in double): agreement to float64 round-off.
    z, weight, bias, grad_y = _inputs((2, 17, 5, 3, 3, 3), torch.float64, "cuda", True)
    y, gz, gw, gb = _reference(z, weight, bias, True, grad_y)
    forward, backward = _TEMPORAL["cuda"]
    torch.testing.assert_close(forward(z, weight, bias, True), y, rtol=1e-12, atol=1e-12)
    grads = backward(grad_y, z, y.contiguous(memory_format=CL3D), weight, True, True, True)
    for got, want in zip(grads, (gz, gw, gb)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
