"""Removing web items that overlap the target set (paper 4.1).

Every web image and every keyframe of every web video is embedded, as is every keyframe of
the target videos (the bank). Embeddings are L2-normalised and each web embedding is matched
to its most similar target keyframe with ``webda_kernels.topk_similarity(k=1)`` (streaming: no
web x target matrix). A web image, or a web video with any keyframe, whose cosine similarity
exceeds ``threshold`` (the paper: 0.9) is dropped, and a JSON report says what went and why.

Default embedding (:func:`default_embedding`), which needs no learned weights: 80 % a 16 x 16
colour thumbnail with its per-channel mean removed, 20 % a square-rooted 4 x 4 x 4 joint RGB
histogram with its mean removed, each part L2-normalised. The cosine of two embeddings is then
0.8 x the correlation of the thumbnails + 0.2 x that of the histograms: close to 1 for the
same picture after mild cropping, rescaling, recompression or brightness change, and low for
different pictures. A trainer may pass its own encoder instead (with its own transform).

Images are decoded and transformed in ``workers`` processes, in batches of fixed composition,
and embedded in this process, so the embeddings do not depend on the number of workers. With a
cache, the default embedding of every file is kept by content (see :mod:`webda.data.cache`):
a rerun embeds only new files. A custom ``embed_fn`` or transform is not cached (its weights
may change).
"""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

import webda_kernels as wk
from webda.data.cache import VectorStore, fingerprint
from webda.data.images import load_image
from webda.data.layout import Item, VideoItem
from webda.data.parallel import check_workers, run_tasks
from webda.data.shots import Keyframe, KeyframeIndex
from webda.data.skips import CorruptFileError, SkipLog
from webda.data.transforms import EvalTransform

EMBEDDING_DIR = "embeddings/default"
THUMBNAIL_WEIGHT = 0.8


def default_embedding(images: torch.Tensor) -> torch.Tensor:
    """Fixed embedding of float (N, 3, H, W) images in [0, 1] -> unit vectors (N, 3*16*16 + 64)."""
    thumbs = F.adaptive_avg_pool2d(images, 16)
    thumbs = (thumbs - thumbs.mean(dim=(2, 3), keepdim=True)).flatten(1)
    bins = (images.clamp(0, 1) * 3.999).long()  # 4 levels per channel
    codes = (bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2]).flatten(1)
    hist = torch.zeros(len(images), 64, dtype=images.dtype).scatter_add_(1, codes, torch.ones_like(codes, dtype=images.dtype))
    hist = (hist / codes.shape[1]).sqrt()
    hist = hist - hist.mean(dim=1, keepdim=True)
    return torch.cat(
        [math.sqrt(THUMBNAIL_WEIGHT) * F.normalize(thumbs, dim=1),
         math.sqrt(1 - THUMBNAIL_WEIGHT) * F.normalize(hist, dim=1)],
        dim=1,
    )


def default_transform() -> EvalTransform:
    """What :func:`default_embedding` expects: 64 x 64 centre crop, values in [0, 1]."""
    return EvalTransform(64, resize=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def cacheable(embed_fn, transform) -> bool:
    """Whether embeddings are a function of the file alone: the default embedding and transform."""
    return embed_fn is default_embedding and transform is None


def load_batch(task):
    """Worker: ``(paths, transform)`` -> (transformed images stacked, or None if none could be
    read; for each path, None if it was read or the reason it could not be)."""
    paths, transform = task
    images, failures = [], []
    for path in paths:
        try:
            images.append(transform(load_image(path, getattr(transform, "source_side", None))))
            failures.append(None)
        except CorruptFileError as err:
            failures.append(str(err))
    return (torch.stack(images) if images else None), failures


@torch.no_grad()
def embed_images(
    items: Sequence[Item],
    embed_fn: Callable[[torch.Tensor], torch.Tensor] = default_embedding,
    transform: Optional[Callable] = None,
    batch_size: int = 128,
    workers: Optional[int] = 1,
    desc: str = "embedding",
    cache: Optional[VectorStore] = None,
    keys: Optional[Dict[Path, str]] = None,
    show_progress: bool = True,
    skips: Optional[SkipLog] = None,
) -> torch.Tensor:
    """L2-normalised embeddings (N, D) of image files, in ``items`` order.

    ``transform`` turns a uint8 (H, W, 3) image into what ``embed_fn`` takes batched
    (default: :func:`default_transform`); with ``workers`` > 1 it must pickle. ``cache``: a
    store of embeddings by ``keys[path]`` (default: the file's content hash), read and filled;
    used only with the default ``embed_fn`` and ``transform`` (:func:`cacheable`). Rows of
    unreadable files are NaN; the files are recorded in ``skips`` (one warning each).
    """
    workers = check_workers(workers)
    if not cacheable(embed_fn, transform):
        cache = None
    transform = transform or default_transform()
    if workers > 1:
        try:
            pickle.dumps(transform)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise ValueError(f"transform must pickle to run in worker processes, or pass workers=1 ({err})") from err
    paths = [Path(item.path) for item in items]
    rows: Dict[int, torch.Tensor] = {}
    if cache is not None:
        keys = {p: (keys or {}).get(p) or fingerprint(p) for p in set(paths)}
        for i, path in enumerate(paths):
            vector = cache.get(keys[path])
            if vector is not None:
                rows[i] = torch.from_numpy(vector)
    missing = [i for i in range(len(paths)) if i not in rows]
    batches = [missing[k:k + batch_size] for k in range(0, len(missing), batch_size)]
    tasks = [([paths[i] for i in batch], transform) for batch in batches]
    skips = skips if skips is not None else SkipLog()
    try:
        for b, (images, failures) in run_tasks(load_batch, tasks, workers, desc, "batch", show_progress):
            read = [i for i, failure in zip(batches[b], failures) if failure is None]
            for i, failure in zip(batches[b], failures):
                if failure is not None:
                    skips.skip(paths[i], failure)
            if images is not None:
                for i, row in zip(read, F.normalize(embed_fn(images).float(), dim=1)):
                    rows[i] = row
                    if cache is not None:
                        cache.put(keys[paths[i]], row.numpy())
    finally:  # an interrupted run keeps what it embedded
        if cache is not None:
            cache.flush()
    if not rows:
        raise ValueError(f"none of the {len(items)} images could be read")
    out = torch.full((len(items), len(next(iter(rows.values())))), float("nan"))
    for index, row in rows.items():
        out[index] = row
    return out


def _nearest(query: torch.Tensor, bank: torch.Tensor):
    """(similarity, bank index) of each query row's most similar bank row."""
    values, indices = wk.topk_similarity(query.nan_to_num(0.0), bank, 1)
    return values[:, 0], indices[:, 0]


@dataclass
class OverlapResult:
    """Web items kept after overlap removal, and the report (also written as JSON)."""

    web_images: List[Item]
    web_videos: List[VideoItem]
    report: dict


def remove_overlap(
    web_images: Sequence[Item],
    web_videos: Sequence[VideoItem],
    target_videos: Sequence[VideoItem],
    keyframes: KeyframeIndex,
    classes: Sequence[str],
    threshold: float = 0.9,
    embed_fn: Callable[[torch.Tensor], torch.Tensor] = default_embedding,
    transform: Optional[Callable] = None,
    report_path=None,
    batch_size: int = 128,
    workers: Optional[int] = 1,
    cache: Optional[VectorStore] = None,
    keys: Optional[Dict[Path, str]] = None,
    show_progress: bool = True,
    skips: Optional[SkipLog] = None,
) -> OverlapResult:
    """Drop web images and web videos whose embedding is within ``threshold`` cosine of a target keyframe.

    ``keyframes`` must cover ``web_videos`` and ``target_videos``. Embedding decodes every web
    image in full: one that cannot be decoded is not kept (nor counted in the report) and is
    recorded in ``skips``. The report lists, per class, the kept and dropped counts and, for
    each dropped file, its similarity and the matching target keyframe. ``workers``, ``cache``,
    ``keys``: as in :func:`embed_images`.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    bank_keyframes = [kf for video in target_videos for kf in keyframes.of(video.path)]
    if not bank_keyframes:
        raise ValueError("no target keyframes to compare against: extract keyframes of the target videos first")
    video_frames = [(v, kf) for v, video in enumerate(web_videos) for kf in keyframes.of(video.path)]
    embed = dict(embed_fn=embed_fn, transform=transform, batch_size=batch_size, workers=workers, cache=cache, keys=keys,
                 show_progress=show_progress, skips=skips)
    query_items = list(web_images) + [Item(kf.path, kf.label) for _, kf in video_frames]
    embedded = embed_images([Item(kf.path, kf.label) for kf in bank_keyframes] + query_items, desc="embedding", **embed)
    bank, queries = embedded[:len(bank_keyframes)], embedded[len(bank_keyframes):]
    readable = ~bank.isnan().any(dim=1)
    bank, bank_keyframes = bank[readable], [kf for kf, ok in zip(bank_keyframes, readable) if ok]
    sims, matches = _nearest(queries, bank)
    matched = [bank_keyframes[m] for m in matches.tolist()]
    image_rows = [i for i, ok in enumerate(~queries[:len(web_images)].isnan().any(dim=1)) if ok]
    readable_images = [web_images[i] for i in image_rows]

    dropped = []
    for i, item in zip(image_rows, readable_images):
        if sims[i] > threshold:
            dropped.append(_drop_record(item, "web_image", sims[i], matched[i], classes))
    best = {}  # web video -> query row of its most similar keyframe
    for row, (v, _) in enumerate(video_frames, start=len(web_images)):
        if v not in best or sims[row] > sims[best[v]]:
            best[v] = row
    for v, row in sorted(best.items()):
        if sims[row] > threshold:
            dropped.append(_drop_record(web_videos[v], "web_video", sims[row], matched[row], classes))

    gone = {record["path"] for record in dropped}
    kept_images = [i for i in readable_images if str(i.path) not in gone]
    kept_videos = [v for v in web_videos if str(v.path) not in gone]
    report = {
        "threshold": threshold,
        "embedding": getattr(embed_fn, "__name__", type(embed_fn).__name__),
        "target_keyframes": len(bank_keyframes),
        "per_class": _per_class(classes, readable_images, web_videos, dropped),
        "dropped": dropped,
    }
    if report_path is not None:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=1))
    return OverlapResult(kept_images, kept_videos, report)


def _drop_record(item: Item, kind: str, similarity, match: Keyframe, classes: Sequence[str]) -> dict:
    return {"path": str(item.path), "kind": kind, "label": classes[item.label], "similarity": round(float(similarity), 4),
            "matched_target_video": str(match.video), "matched_frame": match.shot.keyframe}


def _per_class(classes, web_images, web_videos, dropped) -> dict:
    counts = Counter((r["label"], r["kind"]) for r in dropped)
    images, videos = Counter(i.label for i in web_images), Counter(v.label for v in web_videos)
    return {
        name: {"web_images": images[c], "web_images_dropped": counts[(name, "web_image")],
               "web_videos": videos[c], "web_videos_dropped": counts[(name, "web_video")]}
        for c, name in enumerate(classes)
    }
