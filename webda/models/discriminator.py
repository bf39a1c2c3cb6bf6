"""The multi-layer domain discriminator of the paper (section 3.3, Fig. 3)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def pooled(x: torch.Tensor) -> torch.Tensor:
    """Global average over every dimension after channels: (N, C, ...) -> (N, C)."""
    return x.flatten(2).mean(2)


class MultiLayerDiscriminator(nn.Module):
    """Binary domain classifier over the encoder's stage outputs.

    ``d_l = D_l(relu(d_(l-1) (+) E_l(x)))`` with ``(+)`` concatenation, ``d_0`` empty, ``E_l(x)``
    the pooled output of stage ``l`` and ``D_l`` a linear layer to ``hidden`` units; the domain
    logit is ``head(relu(d_L))``. ``forward(taps)`` takes the pooled taps
    ``[(N, C_1), ..., (N, C_L)]`` and returns logits (N,): train with BCE with logits.
    """

    def __init__(self, tap_channels: Sequence[int], hidden: int = 128):
        super().__init__()
        if not tap_channels:
            raise ValueError("tap_channels must name at least one layer")
        self.layers = nn.ModuleList(
            nn.Linear((0 if i == 0 else hidden) + c, hidden) for i, c in enumerate(tap_channels)
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(taps) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} taps, got {len(taps)}")
        d = self.layers[0](torch.relu(taps[0]))
        for layer, tap in zip(self.layers[1:], taps[1:]):
            d = layer(torch.relu(torch.cat([d, tap], dim=1)))
        return self.head(torch.relu(d)).squeeze(1)
