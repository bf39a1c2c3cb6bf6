"""Video clips as batches of frames and back: (N, C, T, H, W) <-> (N*T, C, H, W).

Public as ``webda_kernels.nn.to_frames`` / ``from_frames``; defined here, below the ops, so
that an op can use them without importing ``webda_kernels.nn`` (whose modules import the ops).
"""

from __future__ import annotations

import torch


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N*T, C, H, W), clip n's frame t at row n * T + t.

    A view when T and N are laid out outside C (``torch.channels_last_3d``: the frames come out
    ``torch.channels_last``), a contiguous copy otherwise (a contiguous x).
    """
    if x.dim() != 5:
        raise ValueError(f"to_frames: x must be (N, C, T, H, W), got shape {tuple(x.shape)}")
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


def from_frames(frames: torch.Tensor, n: int, t: int) -> torch.Tensor:
    """(N*T, ...) -> (N, ..., T): the inverse of :func:`to_frames` for any per-frame output
    (frames (N*T, C, H, W) -> (N, C, T, H, W); per-frame logits (N*T, K) -> (N, K, T)).

    Always a view: row n * T + t becomes clip n, frame t. N and T are both given because
    either may be 0.
    """
    if frames.dim() < 1 or frames.shape[0] != n * t:
        raise ValueError(f"from_frames: frames must have N*T = {n}*{t} rows, got shape {tuple(frames.shape)}")
    return frames.reshape(n, t, *frames.shape[1:]).transpose(1, 2)
