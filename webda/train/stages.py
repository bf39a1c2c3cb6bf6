"""The stage registry: everything that differs between stage 1 (image model) and stage 2 (video model).

``STAGES[name]`` is a :class:`Stage`, ``name`` being its settings class's ``stage`` ("image"
or "video", also its key in :data:`webda.config.TRAIN_PRESETS` and what a checkpoint
records). The trainer, the ``webda train-*`` commands, checkpoint loading, the demo and the
ablation take every stage-specific choice from here.

Stage 1 (paper Fig. 3): a 2D ResNet (random init, or torchvision ImageNet weights from
``--pretrained``) over the web-image, web-frame and target branches with the three domain
pairs L^I, L^V, L^B (only the pairs whose branches exist: ``--branches I`` keeps L^I).
Stage 2 (Fig. 4): the stage-1 network converted to (2+1)D (``--init CKPT``), or a fresh
network converted with trainable spatial weights (``--init scratch``), over web video
chunks and target chunks with one domain pair.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Tuple, Type

from webda.checkpoint_file import load_state, network_state, non_finite, read
from webda.config import ImageConfig, TrainConfig, VideoConfig, from_dict, from_preset, resolve
from webda.errors import UserError
from webda.models.method import IMAGE_PAIRS, TARGET, VIDEO_PAIRS, WebDAModel
from webda.models.resnet import ResNet, build_resnet, load_torchvision_weights
from webda.models.video import to_video_for
from webda.train.data import StageData, image_data, video_data


def _inherit_nothing(cfg: TrainConfig, given: Collection[str]) -> None:
    pass


@dataclass(frozen=True)
class Stage:
    """One training stage.

    - ``config``: its settings class (``config.stage`` is the stage's name);
    - ``command``, ``summary``: its ``webda`` sub-command and what it does;
    - ``video_model``: its network takes clips (N, 3, T, H, W); else images, and evaluation
      runs it on every frame of a clip;
    - ``data(cfg) -> StageData``: the training branches and the evaluation clips;
    - ``network(cfg, num_classes)``: the untrained network of a run, which a checkpoint's
      weights load into;
    - ``start_network(cfg, classes)``: the network training starts from (pretrained or
      stage-1 weights, when the settings name them);
    - ``method(cfg, net, world_size) -> WebDAModel``: the training model around ``net``;
    - ``batch_sizes(cfg)``: ``{branch: batch per process}``;
    - ``inherit(cfg, given)``: copies into ``cfg`` the settings that must match the checkpoint
      the run continues, unless the flags ``given`` (names) set them.
    """

    config: Type[TrainConfig]
    command: str
    summary: str
    video_model: bool
    data: Callable[[Any], StageData]
    network: Callable[[Any, int], ResNet]
    start_network: Callable[[Any, List[str]], ResNet]
    method: Callable[[Any, ResNet, int], WebDAModel]
    batch_sizes: Callable[[Any], Dict[str, int]]
    inherit: Callable[[Any, Collection[str]], None] = _inherit_nothing

    @property
    def name(self) -> str:
        return self.config.stage

    def settings(self, preset: str, **values) -> TrainConfig:
        """Settings of a run: defaults < the training preset ``preset`` < ``values``, validated."""
        return from_preset(self.config, preset, values)

    def resolve(self, args: argparse.Namespace) -> TrainConfig:
        """Settings of a run from parsed ``webda train-*`` flags (defaults < ``--preset`` <
        ``--config`` file < flags, see :func:`webda.config.resolve`), then :attr:`inherit`."""
        cfg = resolve(self.config, args)
        self.inherit(cfg, vars(args).keys())
        return cfg


def _attention(cfg: TrainConfig, world_size: int):
    if not cfg.attention:
        return None
    top_t = max(1, round(cfg.top_t * cfg.batch_target * world_size))
    return dict(top_t=top_t, temperature=cfg.attention_temperature, bank_size=cfg.bank_size,
                class_balance=cfg.attention_class_balance)


def _method(cfg: TrainConfig, net: ResNet, world_size: int, labeled: List[str], pairs) -> WebDAModel:
    """The training model with ``cfg``'s switches: the domain pairs whose branches exist (none
    without DA), attention or uniform weights."""
    present = labeled + [TARGET]
    pairs = [p for p in pairs if cfg.da and all(b in present for b in p)]
    return WebDAModel(net, labeled, pairs, _attention(cfg, world_size), cfg.beta, cfg.discriminator_hidden,
                      cfg.steps, cfg.grl_max)


def _image_network(cfg: ImageConfig, num_classes: int) -> ResNet:
    return build_resnet(cfg.arch, num_classes)


def _image_start_network(cfg: ImageConfig, classes: List[str]) -> ResNet:
    net = _image_network(cfg, len(classes))
    if cfg.pretrained:
        load_torchvision_weights(net, cfg.pretrained)
    return net


def _image_method(cfg: ImageConfig, net: ResNet, world_size: int) -> WebDAModel:
    labeled = [b for b, flag in (("image", "I"), ("frame", "F")) if flag in cfg.branches]
    return _method(cfg, net, world_size, labeled, IMAGE_PAIRS)


IMAGE_STAGE = Stage(
    config=ImageConfig,
    command="train-image",
    summary="stage 1: train the 2D image model (web images + web video keyframes + target)",
    video_model=False,
    data=image_data,
    network=_image_network,
    start_network=_image_start_network,
    method=_image_method,
    batch_sizes=lambda cfg: {"image": cfg.batch_image, "frame": cfg.batch_frame, "target": cfg.batch_target},
)


def _init_checkpoint(cfg: VideoConfig) -> Tuple[Dict[str, Any], ImageConfig]:
    """The stage-1 checkpoint that ``cfg.init`` names, and its settings."""
    ckpt = read(cfg.init)
    if ckpt["stage"] != IMAGE_STAGE.name:
        raise UserError(f"--init {cfg.init} is a {ckpt['stage']}-stage checkpoint; stage 2 starts from a stage-1 "
                        "(train-image) checkpoint or 'scratch'")
    return ckpt, from_dict(ImageConfig, ckpt["config"], f"settings stored in {cfg.init}")


def _video_inherit(cfg: VideoConfig, given: Collection[str]) -> None:
    """Stage 2 continues the stage-1 network: its architecture comes from ``--init``."""
    if cfg.init == "scratch":
        return
    image_arch = _init_checkpoint(cfg)[1].arch
    if "arch" in given and cfg.arch != image_arch:
        raise UserError(f"--arch {cfg.arch} differs from the {image_arch} in --init {cfg.init}")
    cfg.arch = image_arch


def _video_network(cfg: VideoConfig, num_classes: int) -> ResNet:
    return to_video_for(build_resnet(cfg.arch, num_classes), cfg)


def _video_start_network(cfg: VideoConfig, classes: List[str]) -> ResNet:
    """The stage-1 network of ``cfg.init`` converted to video, or a fresh one (``scratch``)."""
    if cfg.init == "scratch":
        return _video_network(cfg, len(classes))
    ckpt, image_cfg = _init_checkpoint(cfg)
    if list(ckpt["classes"]) != list(classes):
        raise UserError(f"--init {cfg.init} was trained on classes {ckpt['classes']}, the data has {classes}")
    if image_cfg.arch != cfg.arch:
        raise UserError(f"--init {cfg.init} holds a {image_cfg.arch}; pass --arch {image_cfg.arch} (or omit --arch)")
    net = _image_network(image_cfg, len(classes))
    weights = network_state(ckpt["model"])
    load_state(net, weights, f"--init {cfg.init}")
    if non_finite(weights):
        raise UserError(f"--init {cfg.init} holds non-finite weights: the stage-1 run that wrote it diverged")
    return to_video_for(net, cfg)


def _video_method(cfg: VideoConfig, net: ResNet, world_size: int) -> WebDAModel:
    return _method(cfg, net, world_size, ["video"], VIDEO_PAIRS)


VIDEO_STAGE = Stage(
    config=VideoConfig,
    command="train-video",
    summary="stage 2: train the (2+1)D video model from a stage-1 checkpoint",
    video_model=True,
    data=video_data,
    network=_video_network,
    start_network=_video_start_network,
    method=_video_method,
    batch_sizes=lambda cfg: {"video": cfg.batch_video, "target": cfg.batch_target},
    inherit=_video_inherit,
)

STAGES: Dict[str, Stage] = {stage.name: stage for stage in (IMAGE_STAGE, VIDEO_STAGE)}

