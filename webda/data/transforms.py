"""Training and evaluation transforms in plain PyTorch (no torchvision).

Input: uint8 frames as a numpy array or tensor, (H, W, 3) for an image or (T, H, W, 3) for a
clip. Output: float32, normalised with ``mean``/``std``, (3, S, S) for an image or
(3, T, S, S) for a clip. One crop (and one flip decision) is shared by all frames of a clip.

- :class:`TrainTransform`: random resized crop (area fraction ``scale``, aspect ``ratio``) to
  ``size``, then a horizontal flip with probability 0.5 if ``flip``. Turn ``flip`` off when
  classes differ by left/right motion: a flip turns one into the other.
- :class:`EvalTransform`: resize the shorter side to ``resize`` then centre crop ``size``
  (the paper: 256 then 224).

Both say in ``source_side`` the shorter side of the smallest source they never upsample: a
loader may decode a large image at a reduced scale down to it (JPEG draft mode).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_clip(frames) -> Tuple[torch.Tensor, bool]:
    """uint8 (H, W, 3) or (T, H, W, 3) -> uint8 (T, H, W, 3), and whether it was a clip."""
    x = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
    if x.dtype != torch.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (H, W, 3) or (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    is_clip = x.ndim == 4
    return (x if is_clip else x.unsqueeze(0)), is_clip


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [0, 1]."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


class _Normalise:
    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def _finish(self, x: torch.Tensor, is_clip: bool) -> torch.Tensor:
        """(T, 3, S, S) in [0, 1] -> normalised (3, T, S, S), or (3, S, S) for an image."""
        x = (x - self.mean) / self.std
        return x.permute(1, 0, 2, 3).contiguous() if is_clip else x[0]


class TrainTransform(_Normalise):
    """Random resized crop to ``size`` x ``size`` (+ optional horizontal flip), normalised."""

    def __init__(
        self,
        size: int,
        scale: Tuple[float, float] = (0.35, 1.0),
        ratio: Tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__(size, mean, std)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale, self.ratio, self.flip = scale, ratio, flip

    @property
    def source_side(self) -> int:
        """The shorter source side at which the smallest, narrowest crop still spans ``size`` pixels."""
        return math.ceil(self.size / math.sqrt(self.scale[0] * min(self.ratio[0], 1 / self.ratio[1])))

    def crop_box(self, height: int, width: int, generator: Optional[torch.Generator] = None):
        """(top, left, h, w) of a random crop covering ``scale`` of the area at aspect ``ratio``."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(2, generator=generator).tolist()
            target_area = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(height - h + 1, (1,), generator=generator))
                left = int(torch.randint(width - w + 1, (1,), generator=generator))
                return top, left, h, w
        side = min(height, width)  # fallback: the largest centred square
        return (height - side) // 2, (width - side) // 2, side, side

    def __call__(self, frames, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        x, is_clip = _as_clip(frames)
        top, left, h, w = self.crop_box(x.shape[1], x.shape[2], generator)
        x = _resize(_to_float(x[:, top : top + h, left : left + w]), self.size, self.size)  # crop, then convert
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            x = x.flip(-1)
        return self._finish(x, is_clip)


class EvalTransform(_Normalise):
    """Resize the shorter side to ``resize`` (default ``size * 256 / 224``), centre crop ``size``."""

    def __init__(
        self,
        size: int,
        resize: Optional[int] = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__(size, mean, std)
        self.resize = round(size * 256 / 224) if resize is None else resize
        if self.resize < size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({size})")

    @property
    def source_side(self) -> int:
        return self.resize

    def __call__(self, frames) -> torch.Tensor:
        x, is_clip = _as_clip(frames)
        x = _to_float(x)
        height, width = x.shape[-2:]
        scale = self.resize / min(height, width)
        height, width = max(self.size, round(height * scale)), max(self.size, round(width * scale))
        x = _resize(x, height, width)
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return self._finish(x[..., top : top + self.size, left : left + self.size], is_clip)
