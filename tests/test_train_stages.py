"""Both stages end to end on the tiny dataset, the ablation switches, evaluation."""

import json

import pytest
import torch

from conftest import tiny_train_flags
from webda.checkpoint import load_network, read
from webda.cli import main
from webda.checkpoint import load_training_model
from webda.config import ImageConfig, VideoConfig
from webda.models.video import to_video
from webda.train.stages import STAGES


def _method(stage, **settings):
    cfg = STAGES[stage].config(data="unused", out="unused", **settings)
    net = STAGES[stage].start_network(cfg, ["a", "b", "c"])
    return STAGES[stage].method(cfg, net, 1)


def test_train_stage_registry():
    assert {name: (s.config, s.command, s.video_model) for name, s in STAGES.items()} == {
        "image": (ImageConfig, "train-image", False), "video": (VideoConfig, "train-video", True)}
    assert all(s.name == name == s.config.stage for name, s in STAGES.items())


def test_train_image_ablation_switches():
    full = _method("image")
    assert full.labeled == ("image", "frame") and len(full.discriminators) == 3 and full.attention is not None
    only_i = _method("image", branches="I")
    assert only_i.labeled == ("image",) and list(only_i.discriminators) == ["target_vs_image"]
    only_f = _method("image", branches="F", attention=False)
    assert list(only_f.discriminators) == ["target_vs_frame"] and only_f.attention is None
    no_da = _method("image", da=False)
    assert len(no_da.discriminators) == 0 and no_da.grl is None and no_da.branches == ("image", "frame", "target")
    plain = _method("image", da=False, attention=False)
    assert plain.branches == ("image", "frame")  # no target data is even loaded


def test_train_video_ablation_switches():
    residual = _method("video", init="scratch")
    assert list(residual.discriminators) == ["target_vs_video"]
    assert residual.net.layer1[0].conv1.spatial_weight.requires_grad  # scratch: spatial weights train
    assert not residual.net.layer1[0].conv1.temporal_weight.any()  # residual: zero-initialised
    plain = _method("video", init="scratch", residual=False, da=False, attention=False)
    w = plain.net.layer1[0].conv1.temporal_weight
    assert torch.equal(w[:, :, 1], torch.eye(w.shape[0]))  # Fig. 5a: identity-initialised
    assert plain.grl is None and plain.attention is None and plain.branches == ("video",)


def test_train_both_stages_and_evaluate_end_to_end(tiny_dataset, tiny_train_cache, tiny_image_run, tmp_path):
    image_ckpt = read(tiny_image_run / "last.pt")
    assert image_ckpt["stage"] == "image" and image_ckpt["step"] == 6
    records = [json.loads(line) for line in (tiny_image_run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "setup" and records[-1]["kind"] == "eval"
    assert {"ce/image", "ce/frame", "domain/target_vs_image", "grl_coeff", "lr"} <= set(records[-2])
    assert (tiny_image_run / "config.toml").is_file() and (tiny_image_run / "evaluation-test.json").is_file()

    out = tmp_path / "video"
    flags = tiny_train_flags(tiny_dataset, out, tiny_train_cache)
    assert main(["train-video", *flags, "--init", str(tiny_image_run / "last.pt"), "--steps", "3",
                 "--batch-video", "3", "--batch-target", "3"]) == 0
    net, cfg, meta = load_network(out / "last.pt", torch.device("cpu"))
    assert meta["stage"] == "video" and meta["step"] == 3 and cfg.arch == image_ckpt["config"]["arch"]
    # the temporal filters trained; the frozen spatial weights are the stage-1 ones (BN folded in)
    image_net, _, _ = load_network(tiny_image_run / "last.pt", torch.device("cpu"))
    start = to_video(image_net)
    assert net.layer1[0].conv1.temporal_weight.any()
    frozen = [n for n, _ in start.named_parameters() if n.endswith("spatial_weight")]
    assert frozen and all(torch.equal(net.get_parameter(n), start.get_parameter(n)) for n in frozen)
    # the whole training model comes back too: discriminators, attention, the schedule's step
    model, model_cfg, model_meta = load_training_model(out / "last.pt")
    assert model_cfg == cfg and model_meta == meta and not model.training
    assert list(model.discriminators) == ["target_vs_video"] and model.grl.iters == meta["step"]
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), net.state_dict().values()))

    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--data", str(tiny_dataset), "--checkpoint", str(out / "last.pt"), "--out",
                 str(report_path), "--no-progress"]) == 0
    report = json.loads(report_path.read_text())
    assert report["stage"] == "video" and report["videos"] == 16
    confusion = torch.tensor(report["confusion"])
    assert confusion.sum() == 16 and confusion.sum(1).tolist() == [4, 4, 4, 4]
    assert report["top1"] == pytest.approx(confusion.diag().sum().item() / 16)
    final = json.loads((out / "evaluation-test.json").read_text())
    assert final["top1"] == report["top1"]  # the trainer's final evaluation is webda evaluate's
