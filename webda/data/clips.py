"""Which frames make a chunk (paper 4.2: 24 consecutive frames, every other one -> 12 frames).

A chunk starting at frame ``s`` takes frames ``s, s + stride, ..., s + span - stride``.
Videos shorter than ``span`` frames are looped: indices wrap around modulo the frame count,
so every chunk has the same number of frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class ChunkSpec:
    """``span`` consecutive source frames sampled every ``stride`` frames."""

    span: int = 24
    stride: int = 2

    def __post_init__(self):
        if self.span < 1 or self.stride < 1:
            raise ValueError(f"span and stride must be >= 1, got span={self.span}, stride={self.stride}")

    @property
    def num_frames(self) -> int:
        """Frames per chunk (12 for the paper's 24 / 2)."""
        return math.ceil(self.span / self.stride)

    def indices(self, start: int, video_frames: int) -> np.ndarray:
        """Frame indices (num_frames,) of the chunk starting at ``start``, looped past the end."""
        if video_frames < 1:
            raise ValueError(f"video_frames must be >= 1, got {video_frames}")
        return (start + np.arange(0, self.span, self.stride)) % video_frames

    def random_start(self, video_frames: int, generator: Optional[torch.Generator] = None) -> int:
        """A uniformly random start such that the chunk fits (0 when the video is too short)."""
        last = max(0, video_frames - self.span)
        return int(torch.randint(last + 1, (1,), generator=generator))

    def eval_starts(self, video_frames: int, num_chunks: Optional[int] = None) -> List[int]:
        """Evenly spaced starts from the first to the last fitting chunk.

        ``num_chunks=None`` takes ``ceil(video_frames / span)`` chunks, enough to cover every
        frame; a video shorter than a chunk gives one (looped) chunk.
        """
        last = max(0, video_frames - self.span)
        if num_chunks is None:
            num_chunks = math.ceil(video_frames / self.span)
        if num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
        if last == 0:
            return [0]
        return sorted({round(x) for x in np.linspace(0, last, num_chunks)})
