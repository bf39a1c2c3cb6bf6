"""The training and evaluation data of both stages, from a dataset root.

:func:`webda.data.prepare.prepare` runs first: discovery, shot keyframes (cached), and
removal of web items that duplicate target keyframes (paper 4.1). Then:

- stage 1 branches: ``image`` (web images), ``frame`` (keyframes of the web videos' shots),
  ``target`` (keyframes of the target train videos, unlabeled);
- stage 2 branches: ``video`` (random chunks of web videos), ``target`` (random chunks of
  target train videos, unlabeled), each chunk inside one detected shot (as the paper's Hecate
  chunks: a chunk never straddles a cut, e.g. into a spliced advert);
- evaluation: evenly spaced, centre-cropped chunks of the target test videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

from torch.utils.data import Dataset

from webda.config import ImageConfig, TrainConfig, VideoConfig
from webda.data.clips import ChunkSpec
from webda.data.datasets import ClipDataset, ImageDataset
from webda.data.layout import VideoItem
from webda.data.prepare import DEFAULT_IMAGE_SIDE, PreparedData, prepare
from webda.data.transforms import EvalTransform, TrainTransform
from webda.errors import UserError


@dataclass
class StageData:
    """``branches[name]``: dataset of (x, label, index); ``evaluation``: target test chunks."""

    prepared: PreparedData
    branches: Dict[str, Dataset]
    evaluation: ClipDataset


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """:func:`prepare` with a process per core; large images cached at least at the size the crops need."""
    image_side = max(DEFAULT_IMAGE_SIDE, TrainTransform(cfg.size).source_side)
    try:
        return prepare(cfg.data, cfg.cache_dir or None, threshold=cfg.overlap_threshold, image_side=image_side,
                       show_progress=cfg.progress)
    except ValueError as err:
        raise UserError(f"preparing {cfg.data}: {err}") from err


def chunk_spec(cfg: TrainConfig) -> ChunkSpec:
    return ChunkSpec(span=cfg.chunk_span, stride=cfg.chunk_stride)


def decode_side(cfg: TrainConfig) -> int:
    """Videos are decoded with this shorter side (the paper's 256 for a 224 crop)."""
    return EvalTransform(cfg.size).resize


def evaluation_data(cfg: TrainConfig, videos: Sequence[VideoItem]) -> ClipDataset:
    """Evenly spaced centre-cropped chunks of labeled target ``videos``."""
    return ClipDataset(videos, EvalTransform(cfg.size), chunk_spec(cfg), train=False, short_side=decode_side(cfg))


def image_data(cfg: ImageConfig) -> StageData:
    """Stage 1 branches for ``cfg.branches``, plus ``target`` (used when attention or DA is on)."""
    prepared = prepare_data(cfg)
    train = TrainTransform(cfg.size, flip=cfg.flip)
    branches: Dict[str, Dataset] = {"target": ImageDataset(prepared.target_frames("train"), train)}
    if "I" in cfg.branches:
        branches["image"] = ImageDataset(prepared.web_images, train, sources=prepared.image_sources)
    if "F" in cfg.branches:
        branches["frame"] = ImageDataset(prepared.web_frames(), train)
    return StageData(prepared, branches, evaluation_data(cfg, prepared.eval_videos("test")))


def video_data(cfg: VideoConfig) -> StageData:
    """Stage 2 branches: ``video`` and ``target`` (used when attention or DA is on)."""
    prepared = prepare_data(cfg)
    clips = dict(transform=TrainTransform(cfg.size, flip=cfg.flip), chunk=chunk_spec(cfg), train=True,
                 short_side=decode_side(cfg), shots=prepared.keyframes)
    branches: Dict[str, Dataset] = {
        "video": ClipDataset(prepared.web_videos, **clips),
        "target": ClipDataset(prepared.target_clips("train"), **clips),
    }
    return StageData(prepared, branches, evaluation_data(cfg, prepared.eval_videos("test")))
