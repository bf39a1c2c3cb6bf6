"""Checkpoints: the file a run saves (:mod:`webda.checkpoint_file`, whose functions are
re-exported here) and the models rebuilt from it through the stage registry
(:data:`webda.train.stages.STAGES`)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from webda.checkpoint_file import FORMAT, VERSION, network_state, read, rng_state, save, set_rng_state
from webda.config import TrainConfig, from_dict
from webda.models.method import WebDAModel
from webda.models.resnet import ResNet
from webda.train.stages import STAGES, Stage

__all__ = ["FORMAT", "VERSION", "config_of", "load_network", "load_training_model", "network_state", "read",
           "rng_state", "save", "set_rng_state"]


def config_of(ckpt: Dict[str, Any], source) -> TrainConfig:
    """The settings stored in ``ckpt`` (read from ``source``), as its stage's settings class."""
    return from_dict(STAGES[ckpt["stage"]].config, ckpt["config"], f"settings stored in {source}")


def _open(path) -> Tuple[Dict[str, Any], TrainConfig, Stage, Dict[str, Any]]:
    ckpt = read(path)
    meta = {"stage": ckpt["stage"], "step": ckpt["step"], "classes": list(ckpt["classes"])}
    return ckpt, config_of(ckpt, path), STAGES[ckpt["stage"]], meta


def load_network(path, device: torch.device) -> Tuple[ResNet, TrainConfig, Dict[str, Any]]:
    """Rebuild the trained network of a checkpoint: (net on ``device`` in eval mode, settings,
    ``{"stage", "step", "classes"}``)."""
    ckpt, cfg, stage, meta = _open(path)
    net = stage.network(cfg, len(meta["classes"]))
    net.load_state_dict(network_state(ckpt["model"]))
    return net.to(device).eval(), cfg, meta


def load_training_model(path, device: torch.device = torch.device("cpu")
                        ) -> Tuple[WebDAModel, TrainConfig, Dict[str, Any]]:
    """Rebuild the whole training model of a checkpoint (network, attention, discriminators,
    gradient-reversal schedule), as a single process would train it: (model on ``device`` in
    eval mode, settings, ``{"stage", "step", "classes"}``)."""
    ckpt, cfg, stage, meta = _open(path)
    model = stage.method(cfg, stage.network(cfg, len(meta["classes"])), 1)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, meta
