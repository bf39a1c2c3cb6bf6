"""Top-T attention module (paper 3.4): weights a source batch by its similarity to a target batch."""

from __future__ import annotations

import numbers
from typing import Union

import torch
from torch import nn

from webda_kernels import _validate
from webda_kernels.topt_attention import topt_attention


class TopTAttention(nn.Module):
    """``alpha = softmax(s / temperature)`` with ``s_i`` the sum of the top-T entries of row i of
    ``src @ W @ tgt.T``; W (dim, dim) is learned and starts as the identity.

    Args:
        dim: feature size D.
        top_t: how many target items each source item sums over: an int in [1, Nt], or a float in
            (0, 1], a fraction of the target batch: T = max(1, round(top_t * Nt)) (0.9 is the
            paper's rule).
        temperature: softmax temperature, > 0.
        backend: as in :func:`webda_kernels.topt_attention`.

    ``forward(src (Ns, D), tgt (Nt, D)) -> alpha (Ns,)``, summing to 1. W is cast to the inputs'
    dtype (for autocast and half-precision models); its gradient arrives in W's own dtype.
    """

    def __init__(self, dim: int, top_t: Union[int, float], temperature: float = 1.0, backend: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__()
        _validate.positive_int("TopTAttention", "dim", dim)
        if isinstance(top_t, numbers.Real) and not isinstance(top_t, numbers.Integral):
            top_t = _validate.finite_number("TopTAttention", "top_t", top_t)
            if not 0.0 < top_t <= 1.0:
                raise ValueError(f"TopTAttention: a float top_t is a fraction of Nt in (0, 1], got {top_t}")
        else:
            top_t = _validate.positive_int("TopTAttention", "top_t (an int, or a float fraction of Nt)", top_t)
        temperature = _validate.finite_number("TopTAttention", "temperature", temperature)
        if temperature <= 0:
            raise ValueError(f"TopTAttention: temperature must be > 0, got {temperature}")
        self.dim, self.top_t, self.temperature, self.backend = dim, top_t, temperature, backend
        self.weight = nn.Parameter(torch.empty(dim, dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.eye(self.dim, dtype=self.weight.dtype, device=self.weight.device))

    def top_t_for(self, n_tgt: int) -> int:
        """The T used against ``n_tgt`` target items."""
        if isinstance(self.top_t, float):
            return max(1, round(self.top_t * n_tgt))
        return self.top_t

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _validate.floating_tensor("TopTAttention", "src", src, ndim=2)
        _validate.floating_tensor("TopTAttention", "tgt", tgt, ndim=2)
        return topt_attention(src, tgt, self.weight.to(src.dtype), self.top_t_for(tgt.shape[0]), self.temperature,
                              backend=self.backend)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, top_t={self.top_t}, temperature={self.temperature}"
