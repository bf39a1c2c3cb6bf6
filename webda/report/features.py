"""Embeddings of image files (web images, cached keyframes) by a trained 2D network."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from webda.data.datasets import ImageDataset
from webda.data.layout import Item
from webda.data.transforms import EvalTransform


@torch.no_grad()
def encoder_embeddings(net: nn.Module, items: Sequence[Item], size: int, batch_size: int = 64) -> torch.Tensor:
    """``net.forward_features`` embeddings (N, D) of ``items`` (centre crop ``size``), in eval mode."""
    was_training = net.training
    net.eval()
    loader = DataLoader(ImageDataset(items, EvalTransform(size)), batch_size=batch_size)
    rows = [net.forward_features(x)[0].float() for x, _, _ in loader]
    net.train(was_training)
    return torch.cat(rows)
