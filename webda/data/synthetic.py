"""The generated webly-supervised dataset (``webda make-dataset``): real JPEG and H.264 files.

It mimics the paper's data (4.1) at laptop scale, in the layout of :mod:`webda.data.layout`:

- web images per class, in the cluttered web style (colour cast, blur, JPEG compression), with
  the paper's noise: irrelevant images (random clutter or adverts), mislabeled images (another
  class's object), and near-duplicates of target *test* keyframes (the leak overlap removal
  must catch);
- web videos per class at a lower resolution, some with an irrelevant advert shot spliced in
  (so shot detection matters), plus re-uploads of target test videos;
- clean, consistent target videos (train without labels for training; test for evaluation).

Classes come from :func:`webda.data.scenes.class_catalogue`: up to three motion pairs (at least
half of the classes, up to 12 classes) that no single frame can tell apart (a pair's items share
every random draw but the direction, :func:`draw_stream`). ``dataset_card.json`` records the
ground truth (true class, noise kind, duplicate sources, spliced shots); training never reads it. Same seed,
same bytes: every item draws from its own generator seeded by (seed, kind, class, index).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from webda.data.images import save_jpeg
from webda.data.scenes import (
    ClassSpec, WebLook, banner_clip, class_catalogue, clutter_background, render_clip, target_background, trajectory,
    web_background,
)
from webda.data.shots import Shot
from webda.data.video import write_mp4

CARD_NAME = "dataset_card.json"


@dataclass(frozen=True)
class DatasetPreset:
    """Sizes and noise rates of a generated dataset. Counts are per class unless noted.

    num_classes: K classes; ``min(2 * ceil(K / 4), 6)`` of them in motion pairs.
    web_images: web images per class (before duplicates); a fraction ``irrelevant_rate`` is
        random content and ``mislabeled_rate`` shows the object of a class that looks different.
    duplicates: extra web images per class that are near-copies of a target test keyframe.
    web_videos: web videos per class (before re-uploads); ``splice_rate`` of them get one
        irrelevant shot of ``irrelevant_shot_frames`` (min, max) frames spliced in.
    reuploads: web videos in total that are re-encoded copies of a target test video.
    target_train, target_test: target videos per class.
    target_size, target_frames: side (px) and length of target videos.
    web_video_size, web_video_frames: side (px) and length of the relevant part of web videos.
    web_image_sizes: (min, max) side (px) of web images.
    fps: frame rate written in every video.
    """

    num_classes: int
    web_images: int
    duplicates: int
    web_videos: int
    reuploads: int
    target_train: int
    target_test: int
    irrelevant_rate: float = 0.15
    mislabeled_rate: float = 0.1
    splice_rate: float = 0.75
    irrelevant_shot_frames: Tuple[int, int] = (16, 22)
    target_size: int = 64
    target_frames: int = 48
    web_video_size: int = 48
    web_video_frames: int = 48
    web_image_sizes: Tuple[int, int] = (48, 80)
    fps: int = 24

    def __post_init__(self):
        for name in ("irrelevant_rate", "mislabeled_rate", "splice_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.irrelevant_rate + self.mislabeled_rate > 1.0:
            raise ValueError(f"irrelevant_rate + mislabeled_rate must be <= 1, got "
                             f"{self.irrelevant_rate + self.mislabeled_rate}")


# Dataset sizes by name (``webda make-dataset --preset``); the training presets of the same
# names are :data:`webda.config.TRAIN_PRESETS`.
DATASET_PRESETS: Dict[str, DatasetPreset] = {
    # tests and CI: 4 classes (one motion pair), generates in seconds
    "tiny": DatasetPreset(num_classes=4, web_images=24, duplicates=3, web_videos=4, reuploads=1, target_train=6,
                          target_test=4),
    # the demo: 6 classes (two motion pairs)
    "small": DatasetPreset(num_classes=6, web_images=60, duplicates=3, web_videos=10, reuploads=2, target_train=12,
                           target_test=8),
    # `webda ablate`: every class of the catalogue (three motion pairs, eight appearance classes, four of
    # them sharing a colour or a shape with another class), 280 target test videos
    "bench": DatasetPreset(num_classes=14, web_images=80, duplicates=3, web_videos=12, reuploads=3, target_train=16,
                           target_test=20),
}

_KIND_CODES = {"target_train": 0, "target_test": 1, "web_image": 2, "web_video": 3, "reupload": 4,
               "image_noise": 5, "video_noise": 6}


def _rng(seed: int, kind: str, class_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_CODES[kind], class_index, index])


def draw_stream(classes: List[ClassSpec], c: int) -> int:
    """The generator stream of class ``c``: a motion pair's two classes share one (the lower index).

    So item i of one class and item i of its partner draw the same background, colour cast,
    blur, pose, speed and noise kind, and differ only in the motion's direction (left/right and
    cw/ccw items start from the same frame; grow/shrink from mirrored sizes): a single frame
    carries no evidence for either class, not even through a memorised background.
    """
    partner = next((k for k, spec in enumerate(classes) if spec.name == classes[c].pair), c)
    return min(c, partner)


def item_rng(seed: int, kind: str, classes: List[ClassSpec], c: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``kind`` in class ``c`` (shared by a motion pair)."""
    return _rng(seed, kind, draw_stream(classes, c), index)


def _kinds(n: int, rates: Dict[str, float], rng: np.random.Generator) -> List[str]:
    """``n`` labels with ``round(rate * n)`` of each noise kind, the rest "clean", shuffled."""
    kinds = [k for k, rate in rates.items() for _ in range(round(rate * n))]
    kinds += ["clean"] * (n - len(kinds))
    return [kinds[i] for i in rng.permutation(n)]


class _Writer:
    """Writes files under ``out`` and collects their dataset-card entries."""

    def __init__(self, out: Path, preset: DatasetPreset, classes: List[ClassSpec], seed: int, progress):
        self.out, self.preset, self.classes, self.seed, self.progress = out, preset, classes, seed, progress
        self.items: List[dict] = []
        self.test_keyframes: Dict[int, List[Tuple[str, int, np.ndarray]]] = {}  # class -> (path, frame, image)
        self.test_videos: List[Tuple[str, int, np.ndarray]] = []  # (path, class, frames)

    def _add(self, path: str, **fields) -> None:
        self.items.append({"path": path, **fields})
        self.progress.update(1)

    def target(self, split: str, c: int, i: int) -> None:
        p, spec = self.preset, self.classes[c]
        rng = item_rng(self.seed, f"target_{split}", self.classes, c, i)
        frames = render_clip(spec, trajectory(spec, p.target_frames, rng), target_background(p.target_size, rng))
        path = f"target/{split}/{spec.name}/{spec.name}_{i:03d}.mp4"
        write_mp4(frames, self.out / path, fps=p.fps, crf=18)
        if split == "test":
            key = Shot(0, len(frames)).keyframe
            self.test_keyframes.setdefault(c, []).append((path, key, frames[key]))
            self.test_videos.append((path, c, frames))
        self._add(path, domain=f"target_{split}", label=spec.name, true_class=spec.name, noise="clean",
                  num_frames=len(frames))

    def web_image(self, c: int, i: int, kind: str) -> None:
        p = self.preset
        rng = item_rng(self.seed, "web_image", self.classes, c, i)
        size = int(rng.integers(p.web_image_sizes[0], p.web_image_sizes[1] + 1))
        quality = int(rng.integers(30, 76))
        extra = {}
        if kind == "duplicate":
            source, frame_index, frame = self.test_keyframes[c][int(rng.integers(len(self.test_keyframes[c])))]
            image = _near_copy(frame, size, rng)
            quality = int(rng.integers(60, 86))
            extra["duplicate_of"] = {"path": source, "frame": frame_index}
            true = c
        elif kind == "irrelevant":
            image = clutter_background(size, rng) if rng.random() < 0.5 else banner_clip(size, 1, rng)[0]
            image = WebLook.sample(rng).apply(image)
            true = None
        else:
            # a mislabeled image shows a class that looks different (not the motion partner, which looks the same)
            others = [k for k, spec in enumerate(self.classes) if k != c and spec.name != self.classes[c].pair]
            true = c if kind == "clean" else int(rng.choice(others))
            spec = self.classes[true]
            pose = trajectory(spec, 1, rng)
            image = render_clip(spec, pose, web_background(size, rng))[0]
            image = WebLook.sample(rng).apply(image)
        name = self.classes[c].name
        path = f"web_images/{name}/{name}_{i:04d}.jpg"
        save_jpeg(image, self.out / path, quality=quality)
        self._add(path, domain="web_image", label=name, noise=kind,
                  true_class=None if true is None else self.classes[true].name, **extra)

    def web_video(self, c: int, i: int, spliced: bool) -> None:
        p, spec = self.preset, self.classes[c]
        rng = item_rng(self.seed, "web_video", self.classes, c, i)
        size = p.web_video_size
        relevant = render_clip(spec, trajectory(spec, p.web_video_frames, rng), web_background(size, rng))
        relevant = WebLook.sample(rng).apply(relevant)
        path = f"web_videos/{spec.name}/{spec.name}_{i:03d}.mp4"
        splice = rng.choice(["start", "middle", "end"]) if spliced else None
        self._write_web_video(path, relevant, splice, rng, label=spec.name, true_class=spec.name,
                              noise="spliced" if spliced else "clean")

    def reupload(self, i: int) -> None:
        p = self.preset
        rng = _rng(self.seed, "reupload", 0, i)
        source, c, frames = self.test_videos[int(rng.integers(len(self.test_videos)))]
        small = np.stack([np.asarray(Image.fromarray(f).resize((p.web_video_size,) * 2, Image.BILINEAR)) for f in frames])
        name = self.classes[c].name
        path = f"web_videos/{name}/{name}_reupload_{i:03d}.mp4"
        splice = rng.choice([None, "start", "end"])  # a channel's intro or outro
        self._write_web_video(path, small, splice, rng, label=name, true_class=name, noise="duplicate",
                              duplicate_of={"path": source})

    def _write_web_video(self, path: str, relevant: np.ndarray, splice: Optional[str], rng, **card) -> None:
        """Write ``relevant`` (T, S, S, 3) with an irrelevant shot spliced in at ``splice``
        ("start", "middle", "end"; None: no splice)."""
        p = self.preset
        parts = [(relevant, True)]
        if splice is not None:
            lo, hi = p.irrelevant_shot_frames
            advert = banner_clip(relevant.shape[1], int(rng.integers(lo, hi + 1)), rng)
            if splice == "middle":
                cut = int(rng.integers(lo, len(relevant) - lo + 1))
                parts = [(relevant[:cut], True), (advert, False), (relevant[cut:], True)]
            else:
                parts = [(advert, False), (relevant, True)][:: 1 if splice == "start" else -1]
        shots, start = [], 0
        for frames, is_relevant in parts:
            shots.append({"start": start, "end": start + len(frames), "relevant": is_relevant})
            start += len(frames)
        frames = np.concatenate([f for f, _ in parts])
        write_mp4(frames, self.out / path, fps=p.fps, crf=30)
        self._add(path, domain="web_video", num_frames=len(frames), shots=shots,
                  boundaries=[s["start"] for s in shots[1:]], **card)


def _near_copy(frame: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A lightly edited copy of ``frame``: crop of 96-100 % of the side, resized, brightness +-5 %."""
    side = frame.shape[0]
    crop = int(round(side * rng.uniform(0.96, 1.0)))
    top, left = rng.integers(0, side - crop + 1, 2)
    image = Image.fromarray(frame[top : top + crop, left : left + crop]).resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)


def generate(out, preset: str = "tiny", seed: int = 0, num_classes: Optional[int] = None,
             show_progress: bool = True, **overrides) -> dict:
    """Write the dataset of ``preset`` (with ``num_classes`` classes if given) under ``out``.

    ``overrides``: other :class:`DatasetPreset` fields to change (e.g. ``splice_rate=0.0``: the
    same web videos without their spliced-in shots, since each video's own frames are drawn
    before its splice).

    ``out`` must not exist or be empty. Returns the dataset card (also written to
    ``out/dataset_card.json``); ``out/classes.txt`` fixes the class order.
    """
    if preset not in DATASET_PRESETS:
        raise ValueError(f"preset must be one of {sorted(DATASET_PRESETS)}, got {preset!r}")
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    p = replace(DATASET_PRESETS[preset], **overrides)
    classes = class_catalogue(p.num_classes)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{spec.name}\n" for spec in classes))

    k = len(classes)
    total = k * (p.target_train + p.target_test + p.web_images + p.duplicates + p.web_videos) + p.reuploads
    with tqdm(total=total, desc=f"make-dataset {preset}", unit="file", disable=not show_progress) as progress:
        writer = _Writer(out, p, classes, seed, progress)
        for split, count in (("train", p.target_train), ("test", p.target_test)):
            for c in range(k):
                for i in range(count):
                    writer.target(split, c, i)
        for c in range(k):
            rng = item_rng(seed, "image_noise", classes, c, 0)
            mislabeled = p.mislabeled_rate if k > 2 else 0.0  # two classes = one pair: no class looks different
            kinds = _kinds(p.web_images, {"irrelevant": p.irrelevant_rate, "mislabeled": mislabeled}, rng)
            kinds += ["duplicate"] * p.duplicates
            for i, j in enumerate(rng.permutation(len(kinds))):
                writer.web_image(c, i, kinds[j])
            spliced = _kinds(p.web_videos, {"spliced": p.splice_rate}, item_rng(seed, "video_noise", classes, c, 0))
            for i, kind in enumerate(spliced):
                writer.web_video(c, i, kind == "spliced")
        for i in range(p.reuploads):
            writer.reupload(i)

    card = {
        "generator": "webda make-dataset",
        "preset": preset,
        "seed": seed,
        "settings": asdict(p),
        "classes": [asdict(spec) for spec in classes],
        "items": writer.items,
    }
    (out / CARD_NAME).write_text(json.dumps(card, indent=1, sort_keys=True))
    return card
