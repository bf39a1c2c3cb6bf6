"""ResidualConv2Plus1d and convert_2d_to_video: identity at initialisation, freezing, the plain
(Fig. 5a) variant, the conversion rules and report, compile and export through the module."""

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from webda_kernels import _dispatch, reference
from webda_kernels.nn import FrameWise, ResidualConv2Plus1d, convert_2d_to_video
from webda_kernels.residual_conv2plus1d import SPEC

CL3D = torch.channels_last_3d


def _random_bn(c, dtype=torch.float32):
    """An eval-mode BatchNorm2d with non-trivial statistics and affine parameters."""
    bn = nn.BatchNorm2d(c).to(dtype)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn.eval()


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
def test_conv2plus1d_from_conv2d_equals_conv_bn_on_every_frame(case, dtype):
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


def test_conv2plus1d_from_conv2d_copies_and_keeps_no_reference_to_the_conv():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    block = ResidualConv2Plus1d.from_conv2d(conv)
    assert block.spatial_weight.data_ptr() != conv.weight.data_ptr()
    with torch.no_grad():
        conv.weight.add_(1.0)
    assert not torch.equal(block.spatial_weight, conv.weight)


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trainable"])
def test_conv2plus1d_freeze_spatial_computes_no_spatial_grad(freeze):
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
def test_conv2plus1d_module_is_the_op_with_its_parameters(activation):
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


def test_conv2plus1d_plain_variant_is_an_identity_initialised_temporal_conv():
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


def test_conv2plus1d_module_bad_arguments_raise():
    with pytest.raises(ValueError, match="temporal_kernel_size"):
        ResidualConv2Plus1d(3, 4, 3, temporal_kernel_size=2)
    with pytest.raises(ValueError, match="activation"):
        ResidualConv2Plus1d(3, 4, 3, activation="gelu")
    with pytest.raises(ValueError, match="stride"):
        ResidualConv2Plus1d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="in_channels"):
        ResidualConv2Plus1d(0, 4, 3)
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


def test_conv2plus1d_extra_repr_names_the_configuration():
    text = repr(ResidualConv2Plus1d(3, 4, 3, stride=2, padding=1, temporal_kernel_size=5, activation="relu"))
    for part in ("3, 4", "kernel_size=(3, 3)", "stride=(2, 2)", "padding=(1, 1)", "temporal_kernel_size=5",
                 "bias=False", "activation=relu", "freeze_spatial=True", "residual=True"):
        assert part in text


# ----------------------------------------------------------------------------- conversion
class BasicBlock(nn.Module):
    """torchvision's BasicBlock, names included (conv1/bn1/relu/conv2/bn2/downsample)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """torchvision's ResNet layout at toy size: 7x7/2 stem, max-pool, two stages, avgpool, fc."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _tiny_resnet():
    model = TinyResNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.load_state_dict(_random_bn(m.num_features).state_dict())
    return model.eval()


def _frame_averaged_logits(model, x):
    """The 2D model on every frame, logits averaged over T (linear head: = pooled features averaged)."""
    with torch.no_grad():
        return torch.stack([model(x[:, :, t]) for t in range(x.shape[2])]).mean(0)


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trainable"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL3D], ids=["contiguous", "channels_last_3d"])
def test_conv2plus1d_convert_resnet_gives_frame_averaged_logits_at_init(residual, freeze, memory_format):
    model = _tiny_resnet()
    video = convert_2d_to_video(model, temporal_kernel_size=3, freeze_spatial=freeze, residual=residual).eval()
    x = torch.randn(2, 3, 4, 17, 19).contiguous(memory_format=memory_format)
    with torch.no_grad():
        got = video(x)
    torch.testing.assert_close(got, _frame_averaged_logits(model, x))
    assert isinstance(model.conv1, nn.Conv2d), "the 2D model must be left unchanged"


def test_conv2plus1d_convert_reports_every_decision(caplog):
    with caplog.at_level(logging.INFO, logger="webda_kernels.nn.convert"):
        video = convert_2d_to_video(_tiny_resnet())
    report = video.video_conversion
    assert report.converted == {
        "conv1": "bn1",
        "layer1.0.conv1": "layer1.0.bn1", "layer1.0.conv2": "layer1.0.bn2",
        "layer2.0.conv1": "layer2.0.bn1", "layer2.0.conv2": "layer2.0.bn2",
        "layer2.1.conv1": "layer2.1.bn1", "layer2.1.conv2": "layer2.1.bn2",
    }
    assert report.per_frame == {"maxpool": "MaxPool2d", "layer2.0.downsample.0": "Conv2d",
                                "layer2.0.downsample.1": "BatchNorm2d"}
    assert report.global_pools == ["avgpool"]
    assert set(report.kept) == {"relu", "layer1.0.relu", "layer2.0.relu", "layer2.1.relu", "fc"}
    assert isinstance(video.conv1, ResidualConv2Plus1d) and isinstance(video.bn1, nn.Identity)
    assert isinstance(video.layer2[0].downsample[1], FrameWise) and isinstance(video.avgpool, nn.AdaptiveAvgPool3d)
    assert "layer2.1.conv2: ResidualConv2Plus1d (layer2.1.bn2 folded)" in caplog.text
    assert "layer2.0.downsample.0: per frame (Conv2d)" in caplog.text


def test_conv2plus1d_convert_freezes_everything_spatial():
    video = convert_2d_to_video(_tiny_resnet(), freeze_spatial=True).train()
    trainable = {name for name, p in video.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in video.named_parameters() if ".temporal_" in name or name.startswith("fc.")}
    downsample_bn = video.layer2[0].downsample[1].module
    assert not downsample_bn.training, "a frozen per-frame BatchNorm stays in eval mode"
    stats = downsample_bn.running_mean.clone()
    frozen = {name: p.detach().clone() for name, p in video.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in video.parameters() if p.requires_grad], lr=0.1)
    video(torch.randn(2, 3, 3, 17, 17)).logsumexp(1).sum().backward()
    optimizer.step()
    assert torch.equal(downsample_bn.running_mean, stats)
    assert all(torch.equal(p, frozen[name]) for name, p in video.named_parameters() if name in frozen)
    assert video.layer1[0].conv2.temporal_weight.grad is not None


def test_conv2plus1d_convert_trainable_keeps_batchnorm_per_frame():
    video = convert_2d_to_video(_tiny_resnet(), freeze_spatial=False).train()
    assert all(p.requires_grad for p in video.parameters())
    assert video.video_conversion.converted["conv1"] is None
    bn = video.bn1.module
    assert isinstance(video.bn1, FrameWise) and bn.training
    stats = bn.running_mean.clone()
    video(torch.randn(2, 3, 3, 17, 17))
    assert not torch.equal(bn.running_mean, stats), "a trainable BatchNorm updates its statistics"


def test_conv2plus1d_convert_grouped_conv_stays_per_frame_with_a_warning(caplog):
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model[1].load_state_dict(_random_bn(4).state_dict())
    model.eval()
    with caplog.at_level(logging.WARNING, logger="webda_kernels.nn.convert"):
        video = convert_2d_to_video(model)
    assert "groups=2" in video.video_conversion.per_frame["0"] and "stays per frame" in caplog.text
    assert video.video_conversion.converted == {"3": None}
    x = torch.randn(1, 4, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(video(x), _frame_averaged_logits(model, x))


class _OwnParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.conv = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        return self.conv(x) * self.scale


def test_conv2plus1d_convert_refuses_what_it_cannot_convert():
    with pytest.raises(ValueError, match=r"1 \(Conv1d\)"):
        convert_2d_to_video(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Conv1d(3, 3, 3)))
    with pytest.raises(ValueError, match=r"0 \(_OwnParameter\).*scale"):
        convert_2d_to_video(nn.Sequential(_OwnParameter()))
    with pytest.raises(ValueError, match="4 features"):
        convert_2d_to_video(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="temporal_kernel_size"):
        convert_2d_to_video(_tiny_resnet(), temporal_kernel_size=4)
    with pytest.raises(ValueError, match="no submodules"):
        convert_2d_to_video(nn.Conv2d(3, 3, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        convert_2d_to_video(lambda x: x)
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\)"):
        FrameWise(nn.ReLU())(torch.randn(2, 3, 4, 4))


# ----------------------------------------------------------------------------- compile and export
def _trained_block():
    block = ResidualConv2Plus1d.from_conv2d(nn.Conv2d(3, 6, 3, padding=1), _random_bn(6), activation="relu")
    with torch.no_grad():
        block.temporal_weight.normal_(std=0.3)
        block.temporal_bias.normal_()
    return block


def test_conv2plus1d_module_under_compile_fullgraph():
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


def test_conv2plus1d_module_under_export():
    block = _trained_block().eval()
    x = torch.randn(1, 3, 4, 5, 5)
    exported = torch.export.export(block, (x,))
    torch.testing.assert_close(exported.module()(x), block(x))


def test_conv2plus1d_module_under_opcheck():
    block = _trained_block()
    for residual in (True, False):
        block.residual = residual
        x = torch.randn(2, 3, 3, 5, 4, requires_grad=True)
        args = (x, block.spatial_weight, block.residual_temporal_weight(), block.spatial_bias, block.temporal_bias, list(block.stride),
                list(block.padding), True, "reference")
        torch.library.opcheck(torch.ops.webda.residual_conv2plus1d.default, args)


def _fast_backends():
    """(backend, device) of every fast backend this machine runs the op on in float32."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [pytest.param(b, d, id=f"{b}-{d}") for d in devices
            for b in _dispatch.serving_backends(SPEC, torch.device(d), torch.float32) if b != "reference"]


@pytest.mark.parametrize("backend,device", _fast_backends())
def test_conv2plus1d_module_runs_on_its_backend(backend, device):
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
