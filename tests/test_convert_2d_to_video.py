"""convert_2d_to_video, FrameWise and the clip <-> frames reshape (to_frames / from_frames):
the conversion rules and report, freezing, identity at initialisation (frame-averaged logits)."""

import logging

import pytest
import torch
from torch import nn

from webda_kernels.nn import FrameWise, ResidualConv2Plus1d, convert_2d_to_video, from_frames, to_frames
from webda_kernels.testing import randomise_batchnorm

CL3D = torch.channels_last_3d


# ----------------------------------------------------------------------------- frames
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL3D], ids=["contiguous", "channels_last_3d"])
def test_to_frames_puts_clip_n_frame_t_at_row_n_t_and_from_frames_undoes_it(memory_format):
    x = torch.randn(2, 3, 4, 5, 6).contiguous(memory_format=memory_format)
    frames = to_frames(x)
    assert frames.shape == (8, 3, 5, 6)
    for n in range(2):
        for t in range(4):
            assert torch.equal(frames[n * 4 + t], x[n, :, t])
    assert (frames.data_ptr() == x.data_ptr()) == (memory_format is CL3D)  # a view of channels_last_3d
    back = from_frames(frames, 2, 4)
    assert torch.equal(back, x) and back.data_ptr() == frames.data_ptr()
    logits = torch.randn(8, 7)  # any per-frame output: (N*T, K) -> (N, K, T)
    assert torch.equal(from_frames(logits, 2, 4)[1, :, 3], logits[7])
    assert from_frames(torch.empty(0, 3, 5, 6), 0, 4).shape == (0, 3, 4, 5, 6)


def test_to_frames_and_from_frames_reject_wrong_shapes():
    with pytest.raises(ValueError, match=r"to_frames: x must be \(N, C, T, H, W\)"):
        to_frames(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"from_frames: frames must have N\*T = 2\*3 rows"):
        from_frames(torch.randn(8, 3), 2, 3)


def test_framewise_applies_the_module_to_every_frame():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 4, 6, 7)
    with torch.no_grad():
        got = FrameWise(conv)(x)
        want = torch.stack([conv(x[:, :, t]) for t in range(4)], dim=2)
    torch.testing.assert_close(got, want)


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
    return randomise_batchnorm(TinyResNet()).eval()


def _frame_averaged_logits(model, x):
    """The 2D model on every frame, logits averaged over T (linear head: = pooled features averaged)."""
    with torch.no_grad():
        return torch.stack([model(x[:, :, t]) for t in range(x.shape[2])]).mean(0)


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trainable"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL3D], ids=["contiguous", "channels_last_3d"])
def test_convert_2d_to_video_resnet_gives_frame_averaged_logits_at_init(residual, freeze, memory_format):
    model = _tiny_resnet()
    video = convert_2d_to_video(model, temporal_kernel_size=3, freeze_spatial=freeze, residual=residual).eval()
    x = torch.randn(2, 3, 4, 17, 19).contiguous(memory_format=memory_format)
    with torch.no_grad():
        got = video(x)
    torch.testing.assert_close(got, _frame_averaged_logits(model, x))
    assert isinstance(model.conv1, nn.Conv2d), "the 2D model must be left unchanged"


def test_convert_2d_to_video_reports_every_decision(caplog):
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


def test_convert_2d_to_video_freezes_everything_spatial():
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


def test_convert_2d_to_video_trainable_keeps_batchnorm_per_frame():
    video = convert_2d_to_video(_tiny_resnet(), freeze_spatial=False).train()
    assert all(p.requires_grad for p in video.parameters())
    assert video.video_conversion.converted["conv1"] is None
    bn = video.bn1.module
    assert isinstance(video.bn1, FrameWise) and bn.training
    stats = bn.running_mean.clone()
    video(torch.randn(2, 3, 3, 17, 17))
    assert not torch.equal(bn.running_mean, stats), "a trainable BatchNorm updates its statistics"


def test_convert_2d_to_video_grouped_conv_stays_per_frame_with_a_warning(caplog):
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    randomise_batchnorm(model).eval()
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


def test_convert_2d_to_video_refuses_what_it_cannot_convert():
    with pytest.raises(ValueError, match=r"1 \(Conv1d\)"):
        convert_2d_to_video(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Conv1d(3, 3, 3)))
    with pytest.raises(ValueError, match=r"0 \(_OwnParameter\).*scale"):
        convert_2d_to_video(nn.Sequential(_OwnParameter()))
    with pytest.raises(ValueError, match="4 features"):
        convert_2d_to_video(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="temporal_kernel_size must be odd"):
        convert_2d_to_video(_tiny_resnet(), temporal_kernel_size=4)
    with pytest.raises(TypeError, match="temporal_kernel_size must be an int"):
        convert_2d_to_video(_tiny_resnet(), temporal_kernel_size=3.0)
    with pytest.raises(ValueError, match="no submodules"):
        convert_2d_to_video(nn.Conv2d(3, 3, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        convert_2d_to_video(lambda x: x)
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\)"):
        FrameWise(nn.ReLU())(torch.randn(2, 3, 4, 4))


