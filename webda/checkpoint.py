"""Checkpoints: the file a run saves (:mod:`webda.checkpoint_file`, whose functions are
re-exported here) and the models rebuilt from it through the stage registry
(:data:`webda.train.stages.STAGES`)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from webda.checkpoint_file import (FORMAT, VERSION, load_state, network_state, non_finite, read, rng_state, save,
                                   set_rng_state)
from webda.config import TrainConfig, from_dict
from webda.errors import UserError
from webda.models.method import WebDAModel
from webda.models.resnet import ResNet
from webda.train.stages import STAGES, Stage

__all__ = ["FORMAT", "VERSION", "config_of", "load_network", "load_state", "load_training_model", "network_state",
           "non_finite", "read", "rng_state", "save", "set_rng_state"]


def config_of(ckpt: Dict[str, Any], source) -> TrainConfig:
    """The settings stored in ``ckpt`` (read from ``source``), as its stage's settings class."""
    if ckpt["stage"] not in STAGES or not isinstance(ckpt["config"], dict):
        raise UserError(f"{source} is a damaged webda checkpoint (stage {ckpt['stage']!r}, settings of type "
                        f"{type(ckpt['config']).__name__})")
    return from_dict(STAGES[ckpt["stage"]].config, ckpt["config"], f"settings stored in {source}")


def _open(path) -> Tuple[Dict[str, Any], TrainConfig, Stage, Dict[str, Any]]:
    ckpt = read(path)
    meta = {"stage": ckpt["stage"], "step": ckpt["step"], "classes": list(ckpt["classes"])}
    return ckpt, config_of(ckpt, path), STAGES[ckpt["stage"]], meta


def load_network(path, device: torch.device) -> Tuple[ResNet, TrainConfig, Dict[str, Any]]:
    """Rebuild the trained network of a checkpoint: (net on ``device`` in eval mode, settings,
    ``{"stage", "step", "classes"}``). :class:`UserError` if the weights do not fit the network or
    are not finite (the run that wrote them diverged: its predictions would mean nothing)."""
    ckpt, cfg, stage, meta = _open(path)
    net = stage.network(cfg, len(meta["classes"]))
    weights = network_state(ckpt["model"])
    load_state(net, weights, f"checkpoint {path}")
    bad = non_finite(weights)
    if bad:
        raise UserError(f"checkpoint {path} holds non-finite weights ({len(bad)} tensors, e.g. {bad[0]!r}): the run "
                        "that wrote it diverged, so its predictions would mean nothing")
    return net.to(device).eval(), cfg, meta


def load_training_model(path, device: torch.device = torch.device("cpu")
                        ) -> Tuple[WebDAModel, TrainConfig, Dict[str, Any]]:
    """Rebuild the whole training model of a checkpoint (network, attention, discriminators,
    gradient-reversal schedule), as a single process would train it: (model on ``device`` in
    eval mode, settings, ``{"stage", "step", "classes"}``)."""
    ckpt, cfg, stage, meta = _open(path)
    model = stage.method(cfg, stage.network(cfg, len(meta["classes"])), 1)
    load_state(model, ckpt["model"], f"checkpoint {path}")
    return model.to(device).eval(), cfg, meta
