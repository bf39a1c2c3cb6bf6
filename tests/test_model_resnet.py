"""webda.models: ResNet naming/size parity with torchvision, weight loading, the video conversion."""

import pytest
import torch
import torch.nn.functional as F

from webda.errors import UserError
from webda.models.resnet import build_resnet, load_torchvision_weights
from webda.models.video import temporal_parameters, to_video
from webda_kernels.testing import randomise_batchnorm


@pytest.mark.parametrize("name, params", [("resnet18", 11_689_512), ("resnet34", 21_797_672)])
def test_model_resnet_matches_torchvision_names_and_sizes(name, params):
    # torchvision's parameter counts for the 1000-class ImageNet models.
    net = build_resnet(name, 1000)
    assert sum(p.numel() for p in net.parameters()) == params
    keys = net.state_dict().keys()
    for key in ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                "layer1.0.bn2.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
                "layer4.1.conv2.weight", "fc.weight", "fc.bias"):
        assert key in keys
    assert not any("downsample" in k for k in keys if k.startswith("layer1."))


def test_model_resnet_forward_shapes_and_taps():
    net = build_resnet("resnet-narrow16", 5)
    emb, taps = net.forward_features(torch.randn(3, 3, 33, 33))
    assert emb.shape == (3, net.embedding_dim)
    assert [t.shape[1] for t in taps] == net.stage_channels
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(UserError, match="unknown architecture"):
        build_resnet("resnet50", 5)


def test_model_resnet_loads_torchvision_state_dict(tmp_path):
    source = build_resnet("resnet18", 1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = build_resnet("resnet18", 7)
    skipped = load_torchvision_weights(net, path)
    assert skipped == ["fc.bias", "fc.weight"]  # a different number of classes: the head stays fresh
    assert torch.equal(net.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    with pytest.raises(UserError, match="expects"):
        load_torchvision_weights(build_resnet("resnet-narrow16", 7), path)
    with pytest.raises(UserError, match="does not exist"):
        load_torchvision_weights(net, tmp_path / "missing.pth")


@pytest.mark.parametrize("arch", ["resnet-narrow16", "resnet18"])
def test_model_video_reproduces_image_model_per_frame_at_init(arch):
    # float64, so BN folding's change of rounding stays far below the tolerance
    torch.manual_seed(0)
    net = randomise_batchnorm(build_resnet(arch, 4)).double().eval()
    video = to_video(net).eval()
    clip = torch.randn(2, 3, 5, 40, 40, dtype=torch.float64)
    frames = clip.transpose(1, 2).reshape(10, 3, 40, 40)
    with torch.no_grad():
        v_emb, v_taps = video.forward_features(clip)
        f_emb, f_taps = net.forward_features(frames)
        frame_logits = net(frames).reshape(2, 5, -1)
        clip_logits = video(clip)
    for vt, ft in zip(v_taps, f_taps):  # every stage output, frame by frame
        torch.testing.assert_close(vt.transpose(1, 2).reshape(ft.shape), ft)
    torch.testing.assert_close(v_emb, f_emb.reshape(2, 5, -1).mean(1))
    torch.testing.assert_close(clip_logits, frame_logits.mean(1))
    # the image model is untouched and only temporal filters (and the head) train
    assert all(p.requires_grad for p in net.parameters())
    trainable = {n for n, p in video.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in temporal_parameters(video) if n.endswith("weight")} | {"fc.weight", "fc.bias"}


def test_model_video_no_residual_is_identity_initialised_plain_block():
    net = randomise_batchnorm(build_resnet("resnet-narrow16", 3)).double().eval()
    plain = to_video(net, residual=False).eval()
    w = plain.layer1[0].conv1.temporal_weight
    assert torch.equal(w[:, :, 1], torch.eye(w.shape[0])) and not w[:, :, [0, 2]].any()
    clip = torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)
    with torch.no_grad():  # identity temporal filters: still the per-frame model at init
        torch.testing.assert_close(plain(clip), net(clip.transpose(1, 2).reshape(4, 3, 32, 32)).mean(0, keepdim=True))


def test_model_video_scratch_trains_spatial_weights():
    video = to_video(build_resnet("resnet-narrow16", 3), freeze_spatial=False)
    assert video.layer2[0].conv1.spatial_weight.requires_grad


def test_model_video_temporal_branch_stays_change_only_while_training():
    torch.manual_seed(0)
    net = randomise_batchnorm(build_resnet("resnet-narrow16", 3))
    change_only, free = to_video(net), to_video(net, change_only=False)
    params = [p for model in (change_only, free) for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3)
    clip, labels = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 2])
    for _ in range(3):
        optimiser.zero_grad()
        sum(F.cross_entropy(model(clip), labels) for model in (change_only, free)).backward()
        optimiser.step()
    for model, constrained in ((change_only, True), (free, False)):
        block = model.layer1[0].conv1
        w = block.temporal_weight
        assert w.abs().amax() > 1e-3  # the filters trained
        assert bool((w.sum(-1).abs() < 1e-6 * w.abs().amax()).all()) == constrained  # zero-sum over time
        assert block.temporal_bias.requires_grad != constrained and block.temporal_bias.any() != constrained
