"""``torch.utils.data.Dataset`` views of images and video chunks, safe with DataLoader workers.

Every sample is ``(x, label, index)``: ``label`` is the class index (-1 for unlabeled target
data) and ``index`` the position in ``dataset.items`` of the file it came from (the video, for
chunks), so a trainer can map samples back to files. A file that fails to decode at this point
is skipped with one warning and the next item is served instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from webda.data.clips import ChunkSpec
from webda.data.images import load_image
from webda.data.layout import Item, VideoItem
from webda.data.shots import KeyframeIndex, Shot
from webda.data.skips import CorruptFileError, SkipLog
from webda.data.video import read_frames


class _SkippingDataset(Dataset):
    """Loads ``items[i]`` with ``_load``; on a decode error, warns once and tries the next item."""

    items: Sequence[Item]

    def __init__(self):
        self.skips = SkipLog()

    def _first_readable(self, index: int, load: Callable[[int], torch.Tensor]) -> Tuple[torch.Tensor, int, int]:
        for attempt in range(len(self.items)):
            i = (index + attempt) % len(self.items)
            try:
                return load(i), self.items[i].label, i
            except CorruptFileError as err:
                self.skips.skip(self.items[i].path, str(err))
        raise RuntimeError(f"none of the {len(self.items)} files of this dataset could be read")


class ImageDataset(_SkippingDataset):
    """Image files (web images, cached keyframes) -> (image float (3, S, S), label, index).

    ``sources``: a file to decode instead of an item's own (``PreparedData.image_sources``: the
    downscaled copies of large images). A JPEG much larger than the transform's ``source_side``
    is decoded at reduced scale (:func:`~webda.data.images.load_image`'s ``min_side``).
    """

    def __init__(self, items: Sequence[Item], transform: Callable, sources: Optional[Dict[Path, Path]] = None):
        super().__init__()
        if not items:
            raise ValueError("ImageDataset needs at least one item")
        self.items, self.transform, self.sources = list(items), transform, dict(sources or {})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        min_side = getattr(self.transform, "source_side", None)

        def load(i: int) -> torch.Tensor:
            path = Path(self.items[i].path)
            return self.transform(load_image(self.sources.get(path, path), min_side))

        return self._first_readable(index, load)


class ClipDataset(_SkippingDataset):
    """Video chunks -> (clip float (3, T, S, S), label, video index).

    ``train=True``: one sample per video, a chunk at a random start (fresh each time). With
    ``shots`` (a :class:`~webda.data.shots.KeyframeIndex` covering the videos) the chunk lies
    inside one shot, picked with probability proportional to its length, as the paper cuts
    chunks from Hecate's shots; a shot shorter than a chunk is looped.
    ``train=False``: every video contributes the evenly spaced chunks of
    :meth:`ChunkSpec.eval_starts`; average the predictions of samples with equal video index.
    ``short_side`` resizes frames while decoding (None keeps the native size). Each video is
    decoded on one thread: run several DataLoader workers instead.
    """

    def __init__(
        self,
        videos: Sequence[VideoItem],
        transform: Callable,
        chunk: ChunkSpec = ChunkSpec(),
        train: bool = True,
        chunks_per_video: Optional[int] = None,
        short_side: Optional[int] = None,
        shots: Optional[KeyframeIndex] = None,
    ):
        super().__init__()
        if not videos:
            raise ValueError("ClipDataset needs at least one video")
        self.items, self.transform, self.chunk = list(videos), transform, chunk
        self.train, self.short_side, self.shots = train, short_side, shots
        self.samples: List[Tuple[int, Optional[int]]] = (
            [(v, None) for v in range(len(self.items))]
            if train
            else [
                (v, start)
                for v, video in enumerate(self.items)
                for start in chunk.eval_starts(video.info.num_frames, chunks_per_video)
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def random_chunk(self, video: VideoItem) -> np.ndarray:
        """Frame indices of a random chunk of ``video``, inside one shot when shots are known."""
        shots = self.shots.shots(video.path) if self.shots is not None else []
        shot = Shot(0, video.info.num_frames)
        if shots:
            lengths = torch.tensor([s.end - s.start for s in shots], dtype=torch.float)
            shot = shots[int(torch.multinomial(lengths, 1))]
        length = shot.end - shot.start
        return shot.start + self.chunk.indices(self.chunk.random_start(length), length)

    def _load(self, video_index: int, start: Optional[int]) -> torch.Tensor:
        video = self.items[video_index]
        if start is None:
            indices = self.random_chunk(video)
        else:
            indices = self.chunk.indices(start, video.info.num_frames)
        return self.transform(read_frames(video.path, indices, self.short_side, threads=1, info=video.info))

    def __getitem__(self, index: int):
        video_index, start = self.samples[index]
        fallback_start = None if self.train else 0  # for the next video, if this one fails
        return self._first_readable(
            video_index, lambda v: self._load(v, start if v == video_index else fallback_start)
        )
