"""The ResidualConv2Plus1d module: built from a Conv2d (+ BatchNorm folded), identity at
initialisation, freezing, the plain (Fig. 5a) variant, argument checks, and the op through the
module under compile, export and opcheck on every backend."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from webda_kernels import _dispatch, reference
from webda_kernels.nn import ResidualConv2Plus1d
from webda_kernels.residual_conv2plus1d import SPEC
from webda_kernels.testing import DEVICES, randomise_batchnorm


def _random_bn(c, dtype=torch.float32):
    """An eval-mode BatchNorm2d with non-trivial statistics and affine parameters."""
    return randomise_batchnorm(nn.BatchNorm2d(c).to(dtype), seed=c).eval()


def _per_frame(fn, x):
    """fn applied to every frame of x (N, C, T, H, W), stacked back along T."""
    return torch.stack([fn(x[:, :, t]) for t in range(x.shape[2])], dim=2)


# ----------------------------------------------------------------------------- the block
FROM_CONV_CASES = [
    # cin, cout, kernel, stride, padding, conv bias, with bn, activation, (T, H, W)
    (3, 8, 3, 1, 1, False, True, None, (3, 9, 9)),
    (3, 5, 7, 2, 3, False, True, "relu", (2, 13, 13)),  # the ResNet stem
    (4, 6, (1, 3), 1, (0, 1), True, False, None, (1, 5, 7)),
    (2, 3, 3, 1, "same", True, True, None, (12, 1, 5)),
    (17, 1, 3, 2, 0, False, False, "relu", (3, 7, 5)),
]


@pytest.mark.parametrize("case", FROM_CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}-k{c[2]}-s{c[3]}-p{c[4]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_residual_conv2plus1d_from_conv2d_equals_conv_bn_on_every_frame(case, dtype):
    cin, cout, kernel, stride, padding, conv_bias, with_bn, activation, (t, h, w) = case
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=conv_bias).to(dtype)
    bn = _random_bn(cout, dtype) if with_bn else None
    block = ResidualConv2Plus1d.from_conv2d(conv, bn, temporal_kernel_size=3, activation=activation)
    x = torch.randn(2, cin, t, h, w, dtype=dtype)

    def frame_2d(frame):
        out = conv(frame) if bn is None else bn(conv(frame))
        return torch.relu(out) if activation == "relu" else out

    with torch.no_grad():
        want = _per_frame(frame_2d, x)
        got = block(x)
    assert torch.equal(block.temporal_weight, torch.zeros_like(block.temporal_weight))
    # Folding the BN only reorders the float arithmetic: round-off of the dtype.
    torch.testing.assert_close(got, want)
    assert (block.spatial_bias is not None) == (conv_bias or with_bn)


def test_residual_conv2plus1d_from_conv2d_copies_and_keeps_no_reference_to_the_conv():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    block = ResidualConv2Plus1d.from_conv2d(conv)
    assert block.spatial_weight.data_ptr() != conv.weight.data_ptr()
    with torch.no_grad():
        conv.weight.add_(1.0)
    assert not torch.equal(block.spatial_weight, conv.weight)


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trainable"])
def test_residual_conv2plus1d_freeze_spatial_computes_no_spatial_grad(freeze):
    block = ResidualConv2Plus1d(3, 5, 3, padding=1, bias=True, freeze_spatial=freeze, activation="relu")
    with torch.no_grad():
        block.temporal_weight.normal_()
    assert block.freeze_spatial is freeze
    assert block.spatial_weight.requires_grad is (not freeze) and block.spatial_bias.requires_grad is (not freeze)
    x = torch.randn(2, 3, 4, 6, 5, requires_grad=True)
    block(x).square().sum().backward()
    assert (block.spatial_weight.grad is None) is freeze and (block.spatial_bias.grad is None) is freeze
    assert block.temporal_weight.grad is not None and block.temporal_bias.grad is not None and x.grad is not None
    block.freeze_spatial = not freeze
    assert block.spatial_weight.requires_grad is freeze


@pytest.mark.parametrize("activation", [None, "relu"])
def test_residual_conv2plus1d_module_is_the_op_with_its_parameters(activation):
    block = ResidualConv2Plus1d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), temporal_kernel_size=5, bias=True,
                                activation=activation, freeze_spatial=False).double()
    with torch.no_grad():
        block.temporal_weight.normal_()
        block.temporal_bias.normal_()
    x = torch.randn(2, 4, 3, 7, 6, dtype=torch.float64)
    want = reference.residual_conv2plus1d(x, block.spatial_weight, block.temporal_weight, block.spatial_bias,
                                          block.temporal_bias, (2, 1), (1, 2), activation)
    got = block(x)
    torch.testing.assert_close(got, want)
    params = [block.spatial_weight, block.spatial_bias, block.temporal_weight, block.temporal_bias]
    grad = torch.randn_like(got)
    for g, w in zip(torch.autograd.grad(got, params, grad), torch.autograd.grad(want, params, grad)):
        torch.testing.assert_close(g, w)


def test_residual_conv2plus1d_plain_variant_is_an_identity_initialised_temporal_conv():
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    block = ResidualConv2Plus1d.from_conv2d(conv, _random_bn(5, torch.float64), temporal_kernel_size=3,
                                            residual=False, activation="relu")
    eye = torch.zeros(5, 5, 3, dtype=torch.float64)
    eye[:, :, 1] = torch.eye(5, dtype=torch.float64)
    assert torch.equal(block.temporal_weight, eye)
    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)
    z = _per_frame(lambda f: F.conv2d(f, block.spatial_weight, block.spatial_bias, padding=1), x)
    torch.testing.assert_close(block(x), torch.relu(z))
    with torch.no_grad():
        block.temporal_weight.normal_()
        block.temporal_bias.normal_()
    plain = F.conv3d(z, block.temporal_weight[:, :, :, None, None], block.temporal_bias, padding=(1, 0, 0))
    torch.testing.assert_close(block(x), torch.relu(plain))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(temporal_kernel_size=2), ValueError, "temporal_kernel_size must be odd"),
    (dict(temporal_kernel_size=0), ValueError, "temporal_kernel_size must be a positive int"),
    (dict(temporal_kernel_size=3.0), TypeError, "temporal_kernel_size must be an int"),
    (dict(activation="gelu"), ValueError, "activation"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=1.5), TypeError, r"ResidualConv2Plus1d: stride must be an int or a pair of ints, got 1\.5"),
    (dict(stride=(1, 2.0)), TypeError, r"stride must be an int or a pair of ints, got \(1, 2\.0\)"),
    (dict(stride=(1, 1, 1)), TypeError, "stride must be an int or a pair"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding=True), TypeError, "padding must be an int or a pair"),
    (dict(kernel_size=(3, "3")), TypeError, "kernel_size must be an int or a pair"),
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(in_channels=0), ValueError, "in_channels must be a positive int"),
    (dict(out_channels=4.0), TypeError, "out_channels must be an int"),
])
def test_residual_conv2plus1d_module_bad_arguments_raise(kwargs, error, match):
    args = dict(in_channels=3, out_channels=4, kernel_size=3)
    with pytest.raises(error, match=match):
        ResidualConv2Plus1d(**{**args, **kwargs})


def test_residual_conv2plus1d_module_from_conv2d_bad_arguments_raise():
    with pytest.raises(TypeError, match="conv2d"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv1d(3, 4, 3))
    with pytest.raises(ValueError, match="groups"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="dilation"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv2d(4, 4, 3, dilation=2))
    with pytest.raises(ValueError, match="features"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5))
    with pytest.raises(TypeError, match="bn"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv2d(3, 4, 3), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="running statistics"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="same"):
        ResidualConv2Plus1d.from_conv2d(nn.Conv2d(3, 4, 2, padding="same"))


def test_residual_conv2plus1d_extra_repr_names_the_configuration():
    text = repr(ResidualConv2Plus1d(3, 4, 3, stride=2, padding=1, temporal_kernel_size=5, activation="relu"))
    for part in ("3, 4", "kernel_size=(3, 3)", "stride=(2, 2)", "padding=(1, 1)", "temporal_kernel_size=5",
                 "bias=False", "activation=relu", "freeze_spatial=True", "residual=True"):
        assert part in text


# ----------------------------------------------------------------------------- compile and export
def _trained_block():
    block = ResidualConv2Plus1d.from_conv2d(nn.Conv2d(3, 6, 3, padding=1), _random_bn(6), activation="relu")
    with torch.no_grad():
        block.temporal_weight.normal_(std=0.3)
        block.temporal_bias.normal_()
    return block


def test_residual_conv2plus1d_module_under_compile_fullgraph():
    block = _trained_block()
    x = torch.randn(2, 3, 5, 7, 6, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    want = block(x)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (x, block.temporal_weight, block.temporal_bias), grad)
    want_grads = torch.autograd.grad(want, (x, block.temporal_weight, block.temporal_bias), grad)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)


def test_residual_conv2plus1d_module_under_export():
    block = _trained_block().eval()
    x = torch.randn(1, 3, 4, 5, 5)
    exported = torch.export.export(block, (x,))
    torch.testing.assert_close(exported.module()(x), block(x))


def test_residual_conv2plus1d_module_under_opcheck():
    block = _trained_block()
    for residual in (True, False):
        block.residual = residual
        x = torch.randn(2, 3, 3, 5, 4, requires_grad=True)
        args = (x, block.spatial_weight, block.residual_temporal_weight(), block.spatial_bias, block.temporal_bias,
                list(block.stride), list(block.padding), True, "reference")
        torch.library.opcheck(torch.ops.webda.residual_conv2plus1d.default, args)


def _fast_backends():
    """(backend, device) of every fast backend this machine runs the op on in float32."""
    return [pytest.param(b, d, id=f"{b}-{d}") for d in DEVICES
            for b in _dispatch.serving_backends(SPEC, torch.device(d), torch.float32) if b != "reference"]


@pytest.mark.parametrize("backend,device", _fast_backends())
def test_residual_conv2plus1d_module_runs_on_its_backend(backend, device):
    block = _trained_block().to(device)
    block.backend = backend
    x = torch.randn(2, 3, 3, 5, 4, device=device, requires_grad=True)
    got = block(x)
    block.backend = "reference"
    want = block(x)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    params = (x, block.temporal_weight, block.temporal_bias)
    for g, w in zip(torch.autograd.grad(got, params, grad), torch.autograd.grad(want, params, grad)):
        torch.testing.assert_close(g, w)
