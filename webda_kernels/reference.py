"""Pure-PyTorch oracles of every webda_kernels op.

Each function has the public op's signature (minus ``backend``) and computes the op's
contract (docs/design.md, "The op contract") with plain PyTorch. Tests, benchmarks and
``python -m webda_kernels.check`` compare every fast backend against these functions; they are
also the fallback on any device.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F


def grad_reverse(x: torch.Tensor, coeff: Union[float, torch.Tensor] = 1.0) -> torch.Tensor:
    """Gradient reversal: returns ``x`` in the forward pass; backward is ``-coeff * grad``."""
    return _ReferenceGradReverse.apply(x, coeff)


class _ReferenceGradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def topt_scores(src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, top_t: int) -> torch.Tensor:
    """``s_i = sum of the top_t largest entries of row i of src @ weight @ tgt.T``; shape (Ns,).

    The gradient of ``s_i`` reaches the selected entries, as torch.topk's backward routes it.
    """
    sim = src @ weight @ tgt.T
    return sim.topk(top_t, dim=1).values.sum(dim=1)


def topt_attention(
    src: torch.Tensor, tgt: torch.Tensor, weight: torch.Tensor, top_t: int, temperature: float = 1.0
) -> torch.Tensor:
    """``alpha = softmax(topt_scores(src, tgt, weight, top_t) / temperature)``; shape (Ns,)."""
    return temperature_softmax(topt_scores(src, tgt, weight, top_t), temperature)


def temperature_softmax(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(scores / temperature)`` over dim 0, as every backend of ``topt_attention`` computes it.

    The largest score is subtracted before dividing (softmax does not change under a shift):
    ``scores / temperature`` alone overflows to inf for a small temperature, and inf - inf
    gives NaN weights where the exact answer is the arg-max's weight 1.
    """
    if scores.numel():
        scores = scores - scores.max().detach()
    return torch.softmax(scores / temperature, dim=0)


def topk_similarity(
    query: torch.Tensor, bank: torch.Tensor, k: int, weight: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Values and int64 indices of the k largest ``query @ weight @ bank.T`` per row.

    Sorted descending; ties broken by the lower bank index. ``weight=None`` is the identity.
    Materialises the (Nq, Nb) matrix: the oracle, not the fast path.
    """
    sim = query @ bank.T if weight is None else query @ weight @ bank.T
    # A stable descending sort keeps equal values in index order: ties -> lower index first.
    values, indices = torch.sort(sim, dim=1, descending=True, stable=True)
    return values[:, :k].contiguous(), indices[:, :k].contiguous()


def residual_conv2plus1d(
    x: torch.Tensor,
    spatial_weight: torch.Tensor,
    temporal_weight: torch.Tensor,
    spatial_bias: Optional[torch.Tensor] = None,
    temporal_bias: Optional[torch.Tensor] = None,
    stride: Union[int, Tuple[int, int]] = 1,
    padding: Union[int, Tuple[int, int]] = 0,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """Frozen-spatial + residual-temporal (2+1)D block (paper Fig. 5b).

    x (N, Cin, T, H, W); spatial_weight (C, Cin, kh, kw) on every frame; temporal_weight
    (C, C, kt), kt odd, zero padding kt // 2. ``z = conv2d(x_t) + spatial_bias``,
    ``y = z + temporal(z) + temporal_bias``, then ``activation`` (None or "relu").
    Returns (N, C, T, Ho, Wo).
    """
    n, cin, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(n * t, cin, h, w)
    z = F.conv2d(frames, spatial_weight, spatial_bias, stride=stride, padding=padding)
    c, ho, wo = z.shape[1:]
    z = z.reshape(n, t, c, ho, wo).transpose(1, 2)
    kt = temporal_weight.shape[2]
    temporal = F.conv3d(z, temporal_weight[:, :, :, None, None], temporal_bias, padding=(kt // 2, 0, 0))
    y = z + temporal
    if activation == "relu":
        y = torch.relu(y)
    return y
