"""The paper's training model: shared encoder + classifier, attention, domain discriminators.

Stage 1 (Fig. 3) has the branches ``image`` (web images, labeled), ``frame`` (web video
keyframes, labeled) and ``target`` (target keyframes, unlabeled); stage 2 (Fig. 4) has
``video`` (web video chunks, labeled) and ``target`` (target chunks). Every branch goes
through the same network ``net`` (tied weights) in one concatenated batch, so batch norm sees
all domains together as at test time on the target.

Loss (equations 1-5): ``sum_b sum_i alpha_bi * CE(C(E(x_bi)), y_bi)`` over the labeled
branches ``b`` (alpha from :class:`WebAttention` against the target batch, or 1/N_b without
attention) plus ``beta * sum_pairs L_pair``. A domain pair ``(one, zero)`` has its own
:class:`MultiLayerDiscriminator`, and ``L_pair = mean BCE(D(one), 1) + mean BCE(D(zero), 0)``
(each side averaged on its own, so the branches may have different batch sizes). The
discriminators see the encoder's stage outputs through one gradient reversal layer whose
coefficient follows the DANN schedule, so a single backward pass trains the discriminators
to separate the domains and the encoder to confuse them.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from webda.models.attention import WebAttention
from webda.models.discriminator import MultiLayerDiscriminator, pooled
from webda_kernels.nn import WarmStartGradientReversal

TARGET = "target"

# The paper's domain pairs (first branch labeled 1 by the discriminator, second 0): stage 1's
# L^I, L^V, L^B and stage 2's L^V.
IMAGE_PAIRS = (("target", "image"), ("target", "frame"), ("image", "frame"))
VIDEO_PAIRS = (("target", "video"),)


def pair_name(pair: Tuple[str, str]) -> str:
    return f"{pair[0]}_vs_{pair[1]}"


class WebDAModel(nn.Module):
    """Network ``net`` (a :class:`~webda.models.resnet.ResNet`, 2D or converted to video)
    trained on labeled web branches and an unlabeled target branch.

    ``labeled``: names of the labeled branches. ``pairs``: domain pairs, each given its own
    discriminator (empty: no domain adaptation, no discriminator built). ``attention``: a
    dict of :class:`WebAttention` arguments (``top_t``, ``temperature``, ``bank_size``), or
    None for uniform weights. ``grl_steps``: length of the DANN schedule (training steps);
    ``grl_max``: the coefficient it rises to.
    """

    def __init__(
        self,
        net: nn.Module,
        labeled: Sequence[str],
        pairs: Sequence[Tuple[str, str]] = (),
        attention: Optional[dict] = None,
        beta: float = 0.5,
        discriminator_hidden: int = 128,
        grl_steps: int = 1000,
        grl_max: float = 1.0,
    ):
        super().__init__()
        if not labeled:
            raise ValueError("at least one labeled branch is needed")
        self.net, self.labeled, self.pairs, self.beta = net, tuple(labeled), tuple(pairs), beta
        dim, taps = net.embedding_dim, net.stage_channels
        self.attention = (
            nn.ModuleDict({b: WebAttention(dim, **attention) for b in self.labeled}) if attention else None
        )
        self.discriminators = nn.ModuleDict(
            {pair_name(p): MultiLayerDiscriminator(taps, discriminator_hidden) for p in self.pairs}
        )
        self.grl = WarmStartGradientReversal(hi=grl_max, max_iters=grl_steps) if self.pairs else None

    @property
    def branches(self) -> Tuple[str, ...]:
        """Branches a batch must have, in the order they are concatenated."""
        needs_target = self.attention is not None or any(TARGET in p for p in self.pairs)
        return self.labeled + ((TARGET,) if needs_target else ())

    def forward(self, inputs: Dict[str, torch.Tensor], labels: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``inputs[b]``: (N_b, 3, [T,] H, W) for every branch in :attr:`branches`;
        ``labels[b]``: (N_b,) class indices for every labeled branch.

        Returns a dict of scalars: ``loss`` (to minimise) = sum of ``ce/<b>`` (attention-weighted
        cross-entropy of labeled branch b) + ``beta`` x sum of ``domain/<pair>``; these terms keep
        their graphs. Detached diagnostics: ``acc/<b>`` (web-label accuracy),
        ``domain_acc/<pair>`` (discriminator accuracy) and ``alpha/<b>`` (the weights, (N_b,)).
        """
        names = self.branches
        sizes = [inputs[b].shape[0] for b in names]
        embedding, taps = self.net.forward_features(torch.cat([inputs[b] for b in names]))
        logits = self.net.fc(embedding)
        split = lambda t: dict(zip(names, torch.split(t, sizes)))  # noqa: E731
        emb, logit = split(embedding), split(logits)
        out = {}

        for b in self.labeled:
            ce = F.cross_entropy(logit[b].float(), labels[b], reduction="none")
            if self.attention is None:
                alpha = torch.full_like(ce, 1.0 / ce.shape[0])
            else:
                alpha = self.attention[b](emb[b], emb[TARGET], labels[b])
            out[f"ce/{b}"] = (alpha * ce).sum()
            out[f"acc/{b}"] = (logit[b].argmax(1) == labels[b]).float().mean().detach()
            out[f"alpha/{b}"] = alpha.detach()
        loss = sum(out[f"ce/{b}"] for b in self.labeled)

        if self.pairs:
            reversed_taps = [split(self.grl(pooled(t).float())) for t in taps]
            for pair in self.pairs:
                name = pair_name(pair)
                out[f"domain/{name}"], out[f"domain_acc/{name}"] = self._domain_loss(pair, reversed_taps)
                loss = loss + self.beta * out[f"domain/{name}"]
        out["loss"] = loss
        return out

    def _domain_loss(self, pair: Tuple[str, str], taps) -> Tuple[torch.Tensor, torch.Tensor]:
        disc = self.discriminators[pair_name(pair)]
        one, zero = (disc([t[b] for t in taps]) for b in pair)
        loss = F.binary_cross_entropy_with_logits(one, torch.ones_like(one)) + F.binary_cross_entropy_with_logits(
            zero, torch.zeros_like(zero)
        )
        acc = 0.5 * ((one > 0).float().mean() + (zero <= 0).float().mean())
        return loss, acc.detach()
