"""From a dataset root to what the trainer reads: discovery, keyframes, overlap removal.

:func:`prepare` runs the three steps (``webda prepare-data`` on the command line) and returns
:class:`PreparedData`, whose methods give the item lists of both stages. Target training
items always come unlabeled (label -1): target labels are only for evaluation.

Each step runs in ``workers`` processes (default: one per core) with one progress bar per
phase (checking files, keyframes, embedding) and gives the same results for any number of
workers. Everything computed is cached in ``cache_dir`` (:mod:`webda.data.cache`): a rerun
reads only new or changed files, extracts keyframes and embeds only what is not cached, and
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from webda.data.cache import VectorStore
from webda.data.image_copies import downscaled_copies
from webda.data.layout import UNLABELED, DatasetLayout, Item, VideoItem, discover
from webda.data.overlap import EMBEDDING_DIR, cacheable, default_embedding, remove_overlap
from webda.data.parallel import check_workers
from webda.data.shots import KeyframeIndex, extract_keyframes

CACHE_NAME = ".webda_cache"
DEFAULT_IMAGE_SIDE = 512


@dataclass
class PreparedData:
    """A discovered dataset with its keyframe cache and the web items kept after overlap removal.

    ``layout`` holds only the files that decoded in full during preparation: a video whose
    keyframes cannot be extracted (listed in ``keyframes.skips``) or a web image that cannot be
    embedded (listed in ``layout.skips``) passed the probe but is left out of every item list.
    ``image_sources``: kept web image -> its downscaled copy, for those that have one (what
    the loader should decode). ``cache_counts``: distinct files whose embedding was reused from
    the cache or computed (``embeddings_reused``, ``embeddings_computed``), downscaled copies
    reused or made (``copies_reused``, ``copies_made``). ``seconds``: wall time of each step
    (``files``, ``keyframes``, ``overlap``).
    """

    layout: DatasetLayout
    keyframes: KeyframeIndex
    web_images: List[Item]
    web_videos: List[VideoItem]
    overlap_report: dict
    image_sources: Dict[Path, Path] = field(default_factory=dict)
    cache_counts: Dict[str, int] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)

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

    def summary(self) -> str:
        """What was found, reused from the cache, computed and dropped, one line per step."""
        dropped = self.overlap_report["dropped"]
        counts = self.cache_counts
        return "\n".join([
            self.layout.summary(),
            f"files: {self.layout.files_reused} unchanged since the cache saw them, "
            f"{len(self.layout.fingerprints) - self.layout.files_reused} read",
            f"keyframes: {self.keyframes.summary()}",
            f"embeddings: {counts['embeddings_reused']} reused from the cache, {counts['embeddings_computed']} computed; "
            f"downscaled copies of large images: {counts['copies_reused']} reused, {counts['copies_made']} made",
            f"overlap removal (cosine > {self.overlap_report['threshold']}): dropped "
            f"{sum(r['kind'] == 'web_image' for r in dropped)} web images and "
            f"{sum(r['kind'] == 'web_video' for r in dropped)} web videos",
            f"in {sum(self.seconds.values()):.1f} s ("
            + ", ".join(f"{step} {s:.1f} s" for step, s in self.seconds.items()) + ")",
        ])


def prepare(
    root,
    cache_dir=None,
    threshold: float = 0.9,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] = default_embedding,
    transform: Optional[Callable] = None,
    shot_threshold: float = 27.0,
    min_shot_len: int = 15,
    image_side: Optional[int] = DEFAULT_IMAGE_SIDE,
    show_progress: bool = True,
    workers: Optional[int] = None,
) -> PreparedData:
    """Discover ``root``, cache keyframes of every video, remove web items overlapping the target.

    ``cache_dir`` defaults to ``root/.webda_cache``; the overlap report is written there as
    ``overlap_report.json``. ``embed_fn``/``transform`` as in :func:`remove_overlap`.
    ``image_side``: keyframes are stored, and web images larger than that are copied, with
    this shorter side at most (:mod:`webda.data.image_copies`); None keeps the native sizes.
    ``workers``: processes per step (default: one per core).
    """
    workers = check_workers(workers)
    if image_side is not None and image_side < 1:
        raise ValueError(f"image_side must be >= 1 (or None), got {image_side}")
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(root) / CACHE_NAME
    clock = [time.perf_counter()]
    layout = discover(root, show_progress=show_progress, workers=workers, cache_dir=cache_dir)
    clock.append(time.perf_counter())
    videos = layout.web_videos + layout.target_videos()
    keyframes = extract_keyframes(
        videos, cache_dir, threshold=shot_threshold, min_shot_len=min_shot_len, keyframe_side=image_side,
        show_progress=show_progress, workers=workers, fingerprints=layout.fingerprints,
    )
    layout = layout.without(path for path, _ in keyframes.skips.skipped)
    sources, copies = {}, {"reused": 0, "made": 0}
    if image_side is not None:
        sources, copies = downscaled_copies(layout.web_images, layout.image_sizes, layout.fingerprints, cache_dir,
                                            image_side, workers, show_progress)
    # Embeddings are kept by file content; a keyframe's name already says what it holds.
    keys = dict(layout.fingerprints)
    keys.update({kf.path: kf.path.relative_to(cache_dir).as_posix() for kf in keyframes.keyframes})
    clock.append(time.perf_counter())
    store = VectorStore(cache_dir / EMBEDDING_DIR) if cacheable(embed_fn, transform) else None
    cached = set(store.vectors) if store is not None else set()
    overlap = remove_overlap(
        layout.web_images, layout.web_videos, layout.target_videos(), keyframes, layout.classes,
        threshold=threshold, embed_fn=embed_fn, transform=transform, report_path=cache_dir / "overlap_report.json",
        workers=workers, cache=store, keys=keys, show_progress=show_progress, skips=layout.skips,
    )
    layout = layout.without(path for path, _ in layout.skips.skipped)
    live = {keys[Path(i.path)] for i in layout.web_images} | {keys[kf.path] for kf in keyframes.keyframes}
    if store is not None:
        store.compact(live)
    counts = {"embeddings_reused": len(live & cached), "embeddings_computed": len(live - cached),
              "copies_reused": copies["reused"], "copies_made": copies["made"]}
    clock.append(time.perf_counter())
    seconds = dict(zip(("files", "keyframes", "overlap"), (b - a for a, b in zip(clock[:-1], clock[1:]))))
    kept = {Path(i.path) for i in overlap.web_images}
    sources = {path: copy for path, copy in sources.items() if path in kept}
    return PreparedData(layout, keyframes, overlap.web_images, overlap.web_videos, overlap.report, sources, counts,
                        seconds)
