"""``webda train-image`` (stage 1) and ``webda train-video`` (stage 2)."""

from __future__ import annotations

import argparse

from webda import checkpoint
from webda.config import ImageConfig, VideoConfig, add_arguments, resolve
from webda.errors import UserError

_EPILOG = """Settings: defaults < --preset < --config FILE.toml < flags. The resolved settings are written to
OUT/config.toml; OUT also gets last.pt (checkpoint), metrics.jsonl and evaluation-test.json.
Multi-GPU / multi-node: torchrun --nproc_per_node=N -m webda {cmd} ... (DDP; gloo on CPU, nccl on CUDA)."""


def add_parser(subparsers) -> None:
    for name, cls, summary in (
        ("train-image", ImageConfig, "stage 1: train the 2D image model (web images + web video keyframes + target)"),
        ("train-video", VideoConfig, "stage 2: train the (2+1)D video model from a stage-1 checkpoint"),
    ):
        parser = subparsers.add_parser(name, help=summary, description=summary, epilog=_EPILOG.format(cmd=name),
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(parser, cls)
        parser.set_defaults(func=_run, config_class=cls)


def _run(args) -> int:
    from webda.train.engine import train
    from webda.train.stages import IMAGE_STAGE, VIDEO_STAGE

    cfg = resolve(args.config_class, args)
    if isinstance(cfg, VideoConfig) and cfg.init != "scratch":
        # Stage 2 continues the stage-1 network: its architecture comes from the checkpoint.
        image_arch = checkpoint.config_of(checkpoint.read(cfg.init), cfg.init).arch
        if hasattr(args, "arch") and args.arch != image_arch:
            raise UserError(f"--arch {args.arch} differs from the {image_arch} in --init {cfg.init}")
        cfg.arch = image_arch
    train(cfg, IMAGE_STAGE if isinstance(cfg, ImageConfig) else VIDEO_STAGE)
    return 0
