"""Attention weights a trained model gives web items (paper Fig. 6), item by item.

The training model weighs a batch of web items against a batch of target items; an item's
weight depends on its batch. :func:`web_item_weights` embeds every web item and target item
once (evaluation transform, eval mode), draws ``draws`` random partitions of the web items
into batches of the training batch size, pairs each batch with a random target batch, and
averages every item's ``alpha x batch size`` (1 = a uniform weight) over the draws.
"""

from __future__ import annotations

from typing import Sequence

import torch

from webda.checkpoint import load_training_model
from webda.data.layout import Item
from webda.report.features import encoder_embeddings
from webda.train.stages import IMAGE_STAGE


@torch.no_grad()
def web_item_weights(checkpoint_path, web_items: Sequence[Item], target_items: Sequence[Item], branch: str = "image",
                     draws: int = 20, seed: int = 0) -> torch.Tensor:
    """Mean ``alpha x batch size`` of each of ``web_items`` (images, or video keyframes with
    ``branch="frame"``) under the stage-1 model of ``checkpoint_path``; shape (len(web_items),)."""
    model, cfg, meta = load_training_model(checkpoint_path)
    if meta["stage"] != IMAGE_STAGE.name or not cfg.attention:
        raise ValueError(f"{checkpoint_path} is not a stage-1 checkpoint trained with attention")
    if branch not in model.attention:
        raise ValueError(f"{checkpoint_path} has no {branch!r} branch (it has {sorted(model.attention)})")
    web, target = (encoder_embeddings(model.net, items, cfg.size) for items in (web_items, target_items))
    batch = IMAGE_STAGE.batch_sizes(cfg)[branch]
    batch_target = min(cfg.batch_target, len(target))
    labels = torch.tensor([item.label for item in web_items])
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(len(web))
    counts = torch.zeros(len(web))
    for _ in range(draws):
        order = torch.randperm(len(web), generator=g)
        for start in range(0, len(web) - batch + 1, batch):
            rows = order[start : start + batch]
            tgt = target[torch.randperm(len(target), generator=g)[:batch_target]]
            total[rows] += model.attention[branch](web[rows], tgt, labels[rows]) * batch
            counts[rows] += 1
    return total / counts.clamp(min=1)
