"""Attention over web items from their similarity to target items (paper section 3.4).

``alpha = softmax(mean of the top-T entries of row i of (src @ W @ tgt.T) / temperature)``
over the labeled web batch, with L2-normalised embeddings and W (learned, identity at the
start) divided by its spectral norm. The paper leaves the scale of ``e = E(x) W E(x')`` open;
without a bound, minimising the attention-weighted loss drives W to put nearly all the
weight on the one easiest item of each batch. With unit embeddings, ||W||_2 = 1 and the
top-T *mean*, the softmax's input lies in [-1, 1] whatever the embedding size and T, so
``temperature`` bounds how much one item can outweigh another (at most exp(2 / temperature)):
the soft down-weighting the paper describes. T defaults to round(0.9 x target batch), the paper's rule.

With ``class_balance`` (ours, on in the trainer by default: ``--attention-class-balance``; the
paper has one softmax over the batch) alpha is then rescaled within each web label so that every label keeps its share of the batch
(:func:`balance_by_label`): the attention reweights the items of a class against each other,
never the classes. Trained through the weighted loss it lowers, one softmax over the batch
learns to give whole classes that are hard to fit less weight, a class prior of its own.

Optionally (our extension, ``bank_size > 0``) the target side is the current target batch
plus a queue of the ``bank_size`` most recent target embeddings (constants), so alpha
compares against more of the target domain than one batch. Under DDP the target embeddings
of every rank are gathered first.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from webda.distributed import gather_rows

from webda_kernels.nn import TopTAttention


def balance_by_label(alpha: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``alpha`` (N,) summing to 1, rescaled within each label so that the items of label c
    together weigh ``n_c / N`` (their share of the batch, as without attention): the weights of
    a label's items keep their ratios, the labels keep their shares. Differentiable."""
    counts = torch.bincount(labels).to(alpha.dtype)
    mass = torch.zeros_like(counts).index_add_(0, labels, alpha)
    return alpha * (counts[labels] / labels.numel()) / mass[labels]


class WebAttention(nn.Module):
    """alpha (Ns,), summing to 1, for web embeddings ``src`` (Ns, D) given target ``tgt`` (Nt, D).

    ``class_balance``: :func:`balance_by_label` with the web labels of ``src``.
    """

    def __init__(self, dim: int, top_t: int, temperature: float = 0.1, bank_size: int = 0,
                 class_balance: bool = False):
        super().__init__()
        if top_t < 1:
            raise ValueError(f"top_t must be >= 1, got {top_t}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if bank_size < 0:
            raise ValueError(f"bank_size must be >= 0, got {bank_size}")
        self.top_t, self.temperature, self.bank_size = top_t, temperature, bank_size
        self.class_balance = class_balance
        # The op's temperature divides the top-T *sum*; ours divides the mean.
        self.topt = spectral_norm(TopTAttention(dim, top_t, temperature * top_t))
        self.register_buffer("bank", torch.zeros(bank_size, dim))
        self.register_buffer("bank_filled", torch.zeros((), dtype=torch.int64))
        self.register_buffer("bank_next", torch.zeros((), dtype=torch.int64))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``labels`` (Ns,): the web labels of ``src``, needed with ``class_balance``."""
        if self.class_balance and labels is None:
            raise ValueError("WebAttention with class_balance needs the web labels of src")
        src = F.normalize(src.float(), dim=1)
        tgt = F.normalize(gather_rows(tgt).float(), dim=1)
        keys = tgt
        if self.bank_size:
            keys = torch.cat([tgt, self.bank[: int(self.bank_filled)]])
            if self.training:
                self._enqueue(tgt.detach())
        if keys.shape[0] < self.top_t:
            raise ValueError(f"attention needs at least top_t={self.top_t} target items, got {keys.shape[0]}")
        alpha = self.topt(src, keys)
        return balance_by_label(alpha, labels) if self.class_balance else alpha

    @torch.no_grad()
    def _enqueue(self, rows: torch.Tensor) -> None:
        rows = rows[-self.bank_size :]
        positions = (int(self.bank_next) + torch.arange(rows.shape[0])) % self.bank_size
        self.bank[positions.to(self.bank.device)] = rows.to(self.bank.dtype)
        self.bank_next.fill_((int(self.bank_next) + rows.shape[0]) % self.bank_size)
        self.bank_filled.fill_(min(self.bank_size, int(self.bank_filled) + rows.shape[0]))

    def extra_repr(self) -> str:
        return (f"top_t={self.top_t}, temperature={self.temperature}, bank_size={self.bank_size}, "
                f"class_balance={self.class_balance}")
