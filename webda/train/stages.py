"""What differs between stage 1 (image model) and stage 2 (video model): data, model, batches.

Stage 1 (paper Fig. 3): a 2D ResNet (random init, or torchvision ImageNet weights from
``--pretrained``) over the web-image, web-frame and target branches with the three domain
pairs L^I, L^V, L^B (only the pairs whose branches exist: ``--branches I`` keeps L^I).
Stage 2 (Fig. 4): the stage-1 network converted to (2+1)D (``--init CKPT``), or a fresh
network converted with trainable spatial weights (``--init scratch``), over web video
chunks and target chunks with one domain pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from torch import nn

from webda import checkpoint
from webda.config import ImageConfig, TrainConfig, VideoConfig
from webda.errors import UserError
from webda.models.method import IMAGE_PAIRS, VIDEO_PAIRS, WebDAModel
from webda.models.resnet import build_resnet, load_torchvision_weights
from webda.models.video import temporal_parameters, to_video_for
from webda.train.data import image_stage, prepare_data, video_stage


@dataclass(frozen=True)
class Stage:
    """``data(cfg) -> StageData``; ``network(cfg, classes)`` -> the network training starts
    from; ``method(cfg, net, world_size) -> WebDAModel`` around it; ``batch_sizes(cfg) ->
    {branch: per-rank batch}``; ``param_groups(model, cfg)`` for SGD."""

    data: Callable
    network: Callable
    method: Callable
    batch_sizes: Callable
    video_model: bool

    @staticmethod
    def param_groups(model: WebDAModel, cfg: TrainConfig) -> List[dict]:
        """Trainable parameters: attention weights without weight decay; temporal filters at
        ``lr * temporal_lr`` (stage 2); the rest at ``lr``."""
        attention = {id(p) for p in model.attention.parameters()} if model.attention is not None else set()
        temporal = {id(p) for _, p in temporal_parameters(model.net)} if isinstance(cfg, VideoConfig) else set()
        groups: Dict[str, dict] = {
            "base": {"params": []},
            "attention": {"params": [], "weight_decay": 0.0},
            "temporal": {"params": [], "lr": cfg.lr * getattr(cfg, "temporal_lr", 1.0)},
        }
        for p in model.parameters():
            if p.requires_grad:
                kind = "attention" if id(p) in attention else "temporal" if id(p) in temporal else "base"
                groups[kind]["params"].append(p)
        return [g for g in groups.values() if g["params"]]


def _attention(cfg: TrainConfig, world_size: int):
    if not cfg.attention:
        return None
    top_t = max(1, round(cfg.top_t * cfg.batch_target * world_size))
    return dict(top_t=top_t, temperature=cfg.attention_temperature, bank_size=cfg.bank_size,
                class_balance=cfg.attention_class_balance)


def _image_network(cfg: ImageConfig, classes: List[str]) -> nn.Module:
    net = build_resnet(cfg.arch, len(classes))
    if cfg.pretrained:
        load_torchvision_weights(net, cfg.pretrained)
    return net


def _image_method(cfg: ImageConfig, net: nn.Module, world_size: int) -> WebDAModel:
    labeled = [b for b, flag in (("image", "I"), ("frame", "F")) if flag in cfg.branches]
    pairs = [p for p in IMAGE_PAIRS if cfg.da and all(b in labeled + ["target"] for b in p)]
    return WebDAModel(net, labeled, pairs, _attention(cfg, world_size), cfg.beta, cfg.discriminator_hidden, cfg.steps,
                      cfg.grl_max)


IMAGE_STAGE = Stage(
    data=lambda cfg: image_stage(cfg, prepare_data(cfg)),
    network=_image_network,
    method=_image_method,
    batch_sizes=lambda cfg: {"image": cfg.batch_image, "frame": cfg.batch_frame, "target": cfg.batch_target},
    video_model=False,
)


def _image_network_for_video(cfg: VideoConfig, classes: List[str]) -> nn.Module:
    """The 2D network stage 2 starts from: the stage-1 checkpoint's, or a fresh one."""
    if cfg.init == "scratch":
        return build_resnet(cfg.arch, len(classes))
    ckpt = checkpoint.read(cfg.init)
    if ckpt["stage"] != "image":
        raise UserError(f"--init {cfg.init} is a {ckpt['stage']}-stage checkpoint; stage 2 starts from a stage-1 "
                        "(train-image) checkpoint or 'scratch'")
    if list(ckpt["classes"]) != list(classes):
        raise UserError(f"--init {cfg.init} was trained on classes {ckpt['classes']}, the data has {classes}")
    image_cfg = checkpoint.config_of(ckpt, cfg.init)
    if image_cfg.arch != cfg.arch:
        raise UserError(f"--init {cfg.init} holds a {image_cfg.arch}; pass --arch {image_cfg.arch} (or omit --arch)")
    net = build_resnet(image_cfg.arch, len(classes))
    net.load_state_dict(checkpoint.network_state(ckpt["model"]))
    return net


def _video_network(cfg: VideoConfig, classes: List[str]) -> nn.Module:
    return to_video_for(_image_network_for_video(cfg, classes), cfg)


def _video_method(cfg: VideoConfig, net: nn.Module, world_size: int) -> WebDAModel:
    pairs = list(VIDEO_PAIRS) if cfg.da else []
    return WebDAModel(net, ["video"], pairs, _attention(cfg, world_size), cfg.beta, cfg.discriminator_hidden,
                      cfg.steps, cfg.grl_max)



VIDEO_STAGE = Stage(
    data=lambda cfg: video_stage(cfg, prepare_data(cfg)),
    network=_video_network,
    method=_video_method,
    batch_sizes=lambda cfg: {"video": cfg.batch_video, "target": cfg.batch_target},
    video_model=True,
)

STAGES = {"image": IMAGE_STAGE, "video": VIDEO_STAGE}
