"""``webda train-image`` (stage 1) and ``webda train-video`` (stage 2): one sub-command per stage."""

from __future__ import annotations

import argparse

from webda.config import add_arguments
from webda.train.stages import STAGES

_EPILOG = """Settings: defaults < --preset < --config FILE.toml < flags. The resolved settings are written to
OUT/config.toml; OUT also gets last.pt (checkpoint), metrics.jsonl and evaluation-test.json.
Multi-GPU / multi-node: torchrun --nproc_per_node=N -m webda {cmd} ... (DDP; gloo on CPU, nccl on CUDA)."""


def add_parser(subparsers) -> None:
    for stage in STAGES.values():
        parser = subparsers.add_parser(stage.command, help=stage.summary, description=stage.summary,
                                       epilog=_EPILOG.format(cmd=stage.command),
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(parser, stage.config)
        parser.set_defaults(func=_run, stage=stage)


def _run(args) -> int:
    from webda.train.engine import train

    train(args.stage.resolve(args))
    return 0
