"""The optimiser of both stages: SGD with momentum and weight decay over three parameter
groups, linear learning-rate warm-up, then cosine decay to 0."""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch

from webda.config import TrainConfig
from webda.models.method import WebDAModel
from webda.models.video import temporal_parameters


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def param_groups(model: WebDAModel, cfg: TrainConfig) -> List[dict]:
    """Trainable parameters: attention weights without weight decay; temporal filters (video
    networks) at ``lr * temporal_lr``; the rest at ``lr``."""
    attention = {id(p) for p in model.attention.parameters()} if model.attention is not None else set()
    temporal = {id(p) for _, p in temporal_parameters(model.net)}
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


def build_optimizer(model: WebDAModel, cfg: TrainConfig
                    ) -> Tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over :func:`param_groups` and its per-step schedule (:func:`lr_factor`)."""
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    return optimizer, scheduler
