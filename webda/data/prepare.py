"""From a dataset root to what the trainer reads: discovery, keyframes, overlap removal.

:func:`prepare` runs the three steps (``webda prepare-data`` on the command line) and returns
:class:`PreparedData`, whose methods give the item lists of both stages. Target training
items always come unlabeled (label -1): target labels are only for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional

import torch

from webda.data.layout import UNLABELED, DatasetLayout, Item, VideoItem, discover
from webda.data.overlap import default_embedding, remove_overlap
from webda.data.shots import KeyframeIndex, extract_keyframes

CACHE_NAME = ".webda_cache"


@dataclass
class PreparedData:
    """A discovered dataset with its keyframe cache and the web items kept after overlap removal."""

    layout: DatasetLayout
    keyframes: KeyframeIndex
    web_images: List[Item]
    web_videos: List[VideoItem]
    overlap_report: dict

    @property
    def classes(self):
        return self.layout.classes

    def web_frames(self) -> List[Item]:
        """Stage 1, web video branch: keyframes of the kept web videos, with their web labels."""
        return self.keyframes.items(self.web_videos)

    def target_frames(self, split: str = "train") -> List[Item]:
        """Stage 1, target branch: keyframes of the target videos of ``split``, unlabeled."""
        return self.keyframes.items(self.layout.target_videos(split), label=UNLABELED)

    def target_clips(self, split: str = "train") -> List[VideoItem]:
        """Stage 2, target branch: the target videos of ``split``, unlabeled."""
        return [replace(v, label=UNLABELED) for v in self.layout.target_videos(split)]

    def eval_videos(self, split: str = "test") -> List[VideoItem]:
        """Evaluation: the labeled target videos of ``split``."""
        return self.layout.target_videos(split)


def prepare(
    root,
    cache_dir=None,
    threshold: float = 0.9,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] = default_embedding,
    transform: Optional[Callable] = None,
    shot_threshold: float = 27.0,
    min_shot_len: int = 15,
    keyframe_side: Optional[int] = None,
    show_progress: bool = True,
) -> PreparedData:
    """Discover ``root``, cache keyframes of every video, remove web items overlapping the target.

    ``cache_dir`` defaults to ``root/.webda_cache``; the overlap report is written there as
    ``overlap_report.json``. ``embed_fn``/``transform`` as in :func:`remove_overlap`.
    """
    layout = discover(root, show_progress=show_progress)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(root) / CACHE_NAME
    keyframes = extract_keyframes(
        layout.web_videos + layout.target_videos(), cache_dir, threshold=shot_threshold,
        min_shot_len=min_shot_len, keyframe_side=keyframe_side, show_progress=show_progress,
    )
    overlap = remove_overlap(
        layout.web_images, layout.web_videos, layout.target_videos(), keyframes, layout.classes,
        threshold=threshold, embed_fn=embed_fn, transform=transform, report_path=cache_dir / "overlap_report.json",
    )
    return PreparedData(layout, keyframes, overlap.web_images, overlap.web_videos, overlap.report)
