"""Gradient reversal modules and the DANN schedule of the reversal coefficient."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from webda_kernels import _validate
from webda_kernels.grad_reverse import grad_reverse


def dann_coeff(progress: float, gamma: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> float:
    """DANN schedule (Ganin & Lempitsky 2015): ``lo + (hi - lo) * (2 / (1 + exp(-gamma * p)) - 1)``.

    ``progress`` p in [0, 1] (clamped) is the fraction of training done; the coefficient
    rises smoothly from ``lo`` at p = 0 towards ``hi`` (with gamma = 10 it reaches
    ``lo + 0.9999 (hi - lo)`` at p = 1), so the encoder is not pushed by an untrained
    discriminator early on.

    Raises:
        TypeError, ValueError: ``progress``, ``gamma``, ``lo`` or ``hi`` is not a finite number,
            ``gamma`` <= 0 (the schedule would not rise) or ``lo`` > ``hi``.
    """
    gamma, lo, hi = _schedule("dann_coeff", gamma, lo, hi)
    p = min(max(_validate.finite_number("dann_coeff", "progress", progress), 0.0), 1.0)
    return lo + (hi - lo) * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def _schedule(op: str, gamma, lo, hi) -> Tuple[float, float, float]:
    """``(gamma, lo, hi)`` of a DANN schedule as floats; TypeError/ValueError unless all are finite,
    gamma > 0 and lo <= hi."""
    gamma, lo, hi = (_validate.finite_number(op, name, v) for name, v in (("gamma", gamma), ("lo", lo), ("hi", hi)))
    if gamma <= 0:
        raise ValueError(f"{op}: gamma must be > 0 (how fast the coefficient rises), got {gamma}")
    if lo > hi:
        raise ValueError(f"{op}: lo must be <= hi (the coefficient rises from lo to hi), got lo={lo}, hi={hi}")
    return gamma, lo, hi


class GradientReversal(nn.Module):
    """Identity in the forward pass; multiplies the gradient by ``-coeff`` in the backward pass.

    ``coeff`` is a plain attribute: set it between steps (or use
    :class:`WarmStartGradientReversal` to follow the DANN schedule).
    """

    def __init__(self, coeff: float = 1.0, backend: str = "auto") -> None:
        super().__init__()
        self.coeff = coeff
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff, backend=self.backend)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


class WarmStartGradientReversal(nn.Module):
    """Gradient reversal whose coefficient follows :func:`dann_coeff` over ``max_iters`` steps.

    Like TLlib's ``WarmStartGradientReverseLayer``: ``coeff = dann_coeff(iters / max_iters,
    gamma, lo, hi)``. Call :meth:`step` once per training step (or pass ``auto_step=True`` to
    step on every forward in training mode). The step counter is saved in ``state_dict``
    (as extra state), so a resumed run continues the schedule where it stopped. ``gamma``,
    ``lo`` and ``hi`` are checked as :func:`dann_coeff` checks them; ``max_iters`` is an int >= 1.
    """

    def __init__(
        self,
        gamma: float = 10.0,
        lo: float = 0.0,
        hi: float = 1.0,
        max_iters: int = 1000,
        auto_step: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        max_iters = _validate.positive_int("WarmStartGradientReversal", "max_iters", max_iters)
        gamma, lo, hi = _schedule("WarmStartGradientReversal", gamma, lo, hi)
        self.gamma, self.lo, self.hi, self.max_iters = gamma, lo, hi, max_iters
        self.auto_step = auto_step
        self.backend = backend
        self.iters = 0

    @property
    def coeff(self) -> float:
        return dann_coeff(self.iters / self.max_iters, self.gamma, self.lo, self.hi)

    def get_extra_state(self) -> dict:
        return {"iters": self.iters}

    def set_extra_state(self, state: dict) -> None:
        self.iters = int(state["iters"])

    def step(self) -> None:
        self.iters += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = grad_reverse(x, self.coeff, backend=self.backend)
        if self.auto_step and self.training:
            self.step()
        return out

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, lo={self.lo}, hi={self.hi}, max_iters={self.max_iters}, auto_step={self.auto_step}"
