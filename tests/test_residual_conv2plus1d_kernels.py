"""Fused temporal kernels of the (2+1)D block (Triton, CUDA) against the reference.

Each backend's ``_TEMPORAL`` pair (forward, backward) is checked on its own, in the layout
the op hands it (channels_last_3d), against ``webda_kernels.reference.residual_conv2plus1d``
with an identity 1x1 spatial conv: that computes exactly ``act(z + conv_t(z) + bias)``.
Triton runs under the interpreter on CPU (tests/conftest.py), so sizes stay tiny there.
"""

import pytest
import torch

from webda_kernels import _dispatch, _extension, reference
from webda_kernels.residual_conv2plus1d import _TEMPORAL, SPEC
from webda_kernels.testing import assert_matches_reference

CL3D = torch.channels_last_3d
GPU = torch.cuda.is_available()


def _backends():
    """(backend, device) pairs the machine can run: triton on the GPU or interpreted, cuda on a GPU."""
    triton_device = "cuda" if GPU else ("cpu" if _dispatch.triton_interpreted() else None)
    cases = []
    if triton_device and _dispatch.triton_importable():
        cases.append(pytest.param("triton", triton_device, id=f"triton-{triton_device}"))
    cases.append(pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.skipif(
        not (GPU and "cuda" in _dispatch.serving_backends(SPEC, torch.device("cuda"), torch.float32)),
        reason="needs a GPU and the CUDA extension")))
    return cases


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (N, C, T, H, W, kt): T = 1 (every tap but the centre falls off), kt > T, odd channel
# counts, C above one 64-channel tile, and enough rows for several weight-gradient splits.
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (1, 3, 1, 2, 3, 3),
    (2, 3, 2, 1, 5, 5),
    (2, 17, 3, 2, 3, 3),
    (1, 33, 12, 1, 7, 3),
    (1, 65, 3, 2, 2, 3),
]


def _expected(z, weight, bias, relu):
    """The reference forward of the temporal part, with autograd (identity spatial conv)."""
    c = z.shape[1]
    eye = torch.eye(c, dtype=z.dtype, device=z.device)[:, :, None, None]
    return reference.residual_conv2plus1d(z, eye, weight, None, bias, activation="relu" if relu else None)


def _reference_grads(z, weight, bias, relu, grad_y):
    """(y, grad_z, grad_weight, grad_bias) of the reference on copies of the inputs."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (z, weight, bias)]
    y = _expected(*leaves, relu)
    y.backward(grad_y)
    return (y.detach(),) + tuple(None if t is None else t.grad for t in leaves)


def _inputs(shape, dtype, device, has_bias):
    n, c, t, h, w, kt = shape
    z = torch.randn(n, c, t, h, w, dtype=dtype, device=device).contiguous(memory_format=CL3D)
    # Weights scaled like a trained temporal conv so y is O(1).
    weight = (torch.randn(c, c, kt, dtype=torch.float32, device=device) / (c * kt) ** 0.5).to(dtype)
    bias = torch.randn(c, dtype=dtype, device=device) if has_bias else None
    grad_y = torch.randn(n, c, t, h, w, dtype=dtype, device=device).contiguous(memory_format=CL3D)
    return z, weight, bias, grad_y


def _double(t):
    return None if t is None else t.double()


@pytest.mark.parametrize("backend,device", _backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu,has_bias", [(False, False), (True, True)], ids=["plain", "relu-bias"])
def test_conv2plus1d_kernels_forward_backward_match_reference(backend, device, dtype, shape, relu, has_bias):
    forward, backward = _TEMPORAL[backend]
    z, weight, bias, grad_y = _inputs(shape, dtype, device, has_bias)
    same = _reference_grads(z, weight, bias, relu, grad_y)
    exact = _reference_grads(z.double(), weight.double(), _double(bias), relu, grad_y.double())

    y = forward(z, weight, bias, relu)
    assert y.dtype == dtype and y.shape == z.shape and y.is_contiguous(memory_format=CL3D)
    assert_matches_reference(y, same[0], exact[0], "output", what="y")

    # The backward reads the relu mask from y: give it the exact y's signs so that a value
    # rounding across zero cannot flip a mask bit between the kernel and the float64 oracle.
    y_mask = exact[0].to(dtype).contiguous(memory_format=CL3D) if relu else None
    grad_z, grad_weight, grad_bias = backward(grad_y, z, y_mask, weight, relu, True, has_bias)
    assert grad_z.dtype == dtype and grad_z.is_contiguous(memory_format=CL3D)
    assert grad_weight.dtype == dtype and grad_weight.shape == weight.shape
    assert_matches_reference(grad_z, same[1], exact[1], "grad", what="grad_z")
    assert_matches_reference(grad_weight, same[2], exact[2], "grad", what="grad_weight")
    if has_bias:
        assert grad_bias.dtype == dtype and grad_bias.shape == bias.shape
        assert_matches_reference(grad_bias, same[3], exact[3], "grad", what="grad_bias")
    else:
        assert grad_bias is None


@pytest.mark.parametrize("backend,device", _backends())
def test_conv2plus1d_kernels_weight_grad_over_many_row_splits(backend, device, monkeypatch):
    # 210 rows; Triton gets few programs so that each sums several 64-row tiles and the last
    # split is partial. (CUDA's splits of several 32-row chunks are met at the stage shape below.)
    import webda_kernels.triton.residual_conv2plus1d as triton_kernels

    monkeypatch.setattr(triton_kernels, "WEIGHT_GRAD_PROGRAMS", 8)
    z, weight, bias, grad_y = _inputs((2, 17, 3, 5, 7, 3), torch.float32, device, True)
    _, _, want_weight, want_bias = _reference_grads(z.double(), weight.double(), bias.double(), True, grad_y.double())
    same = _reference_grads(z, weight, bias, True, grad_y)
    y_mask = _expected(z.double(), weight.double(), bias.double(), True).float().contiguous(memory_format=CL3D)
    _, grad_weight, grad_bias = _TEMPORAL[backend][1](grad_y, z, y_mask, weight, True, True, True)
    assert_matches_reference(grad_weight, same[2], want_weight, "grad", what="grad_weight")
    assert_matches_reference(grad_bias, same[3], want_bias, "grad", what="grad_bias")


@pytest.mark.parametrize("backend,device", _backends())
def test_conv2plus1d_kernels_skip_unrequested_grads_and_empty_input(backend, device):
    forward, backward = _TEMPORAL[backend]
    z, weight, _, grad_y = _inputs((2, 5, 3, 2, 2, 3), torch.float32, device, False)
    grad_z, grad_weight, grad_bias = backward(grad_y, z, None, weight, False, False, False)
    assert grad_weight is None and grad_bias is None
    want = _reference_grads(z.double(), weight.double(), None, False, grad_y.double())[1]
    same = _reference_grads(z, weight, None, False, grad_y)[1]
    assert_matches_reference(grad_z, same, want, "grad", what="grad_z")

    empty = torch.empty(0, 5, 3, 2, 2, device=device).contiguous(memory_format=CL3D)
    assert forward(empty, weight, None, True).shape == empty.shape
    grad_z, grad_weight, grad_bias = backward(empty, empty, empty, weight, True, True, True)
    assert grad_z.shape == empty.shape
    assert torch.equal(grad_weight, torch.zeros_like(weight)) and torch.equal(grad_bias, torch.zeros(5, device=device))


@pytest.mark.skipif(not GPU, reason="needs a GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=lambda d: str(d)[6:])
def test_conv2plus1d_kernels_at_a_resnet_stage_shape(backend, dtype):
    if backend not in _dispatch.serving_backends(SPEC, torch.device("cuda"), dtype):
        pytest.skip(f"{backend} unavailable")
    # ResNet-34 stage 3 of a 12-frame chunk, batch 2: many tiles in every direction.
    z, weight, bias, grad_y = _inputs((2, 256, 12, 14, 14, 3), dtype, "cuda", True)
    same = _reference_grads(z, weight, bias, True, grad_y)
    exact = _reference_grads(z.double(), weight.double(), bias.double(), True, grad_y.double())
    forward, backward = _TEMPORAL[backend]
    assert_matches_reference(forward(z, weight, bias, True), same[0], exact[0], "output", what="y")
    y_mask = exact[0].to(dtype).contiguous(memory_format=CL3D)
    grads = backward(grad_y, z, y_mask, weight, True, True, True)
    for got, s, e, what in zip(grads, same[1:], exact[1:], ("grad_z", "grad_weight", "grad_bias")):
        assert_matches_reference(got, s, e, "grad", what=what)


@pytest.mark.skipif(not GPU or _extension.load("cuda") is None, reason="needs a GPU and the CUDA extension")
def test_conv2plus1d_kernels_cuda_float64_matches_reference():
    # The CUDA kernels also take float64 (FMA in double): agreement to float64 round-off.
    z, weight, bias, grad_y = _inputs((2, 17, 5, 3, 3, 3), torch.float64, "cuda", True)
    y, gz, gw, gb = _reference_grads(z, weight, bias, True, grad_y)
    forward, backward = _TEMPORAL["cuda"]
    torch.testing.assert_close(forward(z, weight, bias, True), y, rtol=1e-12, atol=1e-12)
    grads = backward(grad_y, z, y.contiguous(memory_format=CL3D), weight, True, True, True)
    for got, want in zip(grads, (gz, gw, gb)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
