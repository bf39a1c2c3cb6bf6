"""Shot boundaries and one keyframe per shot, cached as JPEG files with an index.

Shots come from PySceneDetect's ``ContentDetector`` (mean change of hue, saturation and
luminance between consecutive frames above ``threshold``, shots at least ``min_shot_len``
frames), fed with frames decoded by :mod:`webda.data.video`. The paper used Hecate; any shot
detector fits here. The keyframe of a shot is its middle frame.

One decoding pass per video: frames are converted small (shorter side ``detect_side``, BGR as
the detector wants) for detection, and the decoded frames are kept (up to
``RETAINED_BYTES``) so the keyframes are converted from them; a longer video is decoded a
second time, up to its last keyframe. Videos are processed in ``workers`` processes.

Cache layout (``cache_dir``, see :mod:`webda.data.cache`)::

    keyframes.jsonl          journal: "<video sha256>:<settings>" -> {"shots", "files": [[name, bytes], ...]}
    keyframes/<settings>/<video sha256>_s<k>.jpg

``<settings>`` is a hash of the detector settings, so a video is processed again only when its
content or the settings change. An entry whose files are missing or of another size is
rebuilt; keyframe files no entry refers to are deleted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode

from webda.data.cache import Journal, delete_unreferenced, files_intact, fingerprint
from webda.data.images import save_jpeg
from webda.data.layout import Item, VideoItem
from webda.data.parallel import check_workers, decode_threads, run_tasks
from webda.data.skips import CorruptFileError, SkipLog, reading
from webda.data.video import FrameConverter, decode, read_frames

INDEX_NAME = "keyframes.jsonl"
KEYFRAME_DIR = "keyframes"
RETAINED_BYTES = 256 << 20  # decoded frames a worker keeps to take keyframes from without a second pass
_FORMAT = 2  # of the cache entries: a new value invalidates older caches


@dataclass(frozen=True)
class Shot:
    """Frames ``start`` (inclusive) to ``end`` (exclusive) of one video."""

    start: int
    end: int

    @property
    def keyframe(self) -> int:
        """The middle frame, the shot's representative."""
        return (self.start + self.end) // 2


class _ShotDetector:
    """ContentDetector over consecutive BGR frames; :meth:`shots` once every frame was added."""

    def __init__(self, threshold: float, min_shot_len: int, fps: float):
        self._detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_len)
        self._fps, self._cuts, self.num_frames = fps, [], 0

    def add(self, bgr: np.ndarray) -> None:
        self._cuts += self._detector.process_frame(FrameTimecode(self.num_frames, fps=self._fps), bgr)
        self.num_frames += 1

    def shots(self, path) -> List[Shot]:
        if self.num_frames == 0:
            raise CorruptFileError(f"{path}: video has no frames")
        cuts = self._cuts + self._detector.post_process(FrameTimecode(self.num_frames - 1, fps=self._fps))
        bounds = [0] + sorted({c.frame_num for c in cuts if 0 < c.frame_num < self.num_frames}) + [self.num_frames]
        return [Shot(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def detect_shots(
    path, threshold: float = 27.0, min_shot_len: int = 15, short_side: Optional[int] = None, fps: float = 25.0,
    threads: int = 0,
) -> List[Shot]:
    """Shots of the video at ``path``, in order, covering every frame.

    ``short_side`` downsizes frames for detection (None = native size); ``fps`` only labels
    the detector's timecodes (``min_shot_len`` is in frames). Raises CorruptFileError.
    """
    detector, convert = _ShotDetector(threshold, min_shot_len, fps), FrameConverter(short_side, "bgr24")
    for frame in decode(path, threads):
        with reading(path, "frame conversion failed"):
            detector.add(convert(frame))
    return detector.shots(path)


@dataclass(frozen=True)
class ShotSettings:
    """What the cached shots and keyframes of a video depend on, besides its content."""

    threshold: float = 27.0
    min_shot_len: int = 15
    detect_side: int = 128
    keyframe_side: Optional[int] = None

    @property
    def key(self) -> str:
        """A short hash of the settings (and of the cache format)."""
        text = json.dumps({"format": _FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def shots_and_keyframes(path, info, settings: ShotSettings, threads: int = 0):
    """(shots, keyframes uint8 (len(shots), H, W, 3) RGB) of one video, in one decoding pass when
    its decoded frames fit in ``RETAINED_BYTES``. Raises CorruptFileError."""
    detector = _ShotDetector(settings.threshold, settings.min_shot_len, info.fps)
    detect = FrameConverter(min(settings.detect_side, info.width, info.height), "bgr24")
    kept, kept_bytes = [], 0
    for frame in decode(path, threads):
        with reading(path, "frame conversion failed"):
            detector.add(detect(frame))
        if kept is not None:
            kept.append(frame)
            kept_bytes += sum(plane.buffer_size for plane in frame.planes)
            if kept_bytes > RETAINED_BYTES:
                kept = None
    shots = detector.shots(path)
    side = settings.keyframe_side if settings.keyframe_side is not None and settings.keyframe_side < min(
        info.width, info.height) else None
    if kept is None:
        return shots, read_frames(path, [s.keyframe for s in shots], side, threads, info)
    convert = FrameConverter(side)
    with reading(path, "frame conversion failed"):
        return shots, np.stack([convert(kept[s.keyframe]) for s in shots])


@dataclass(frozen=True)
class Keyframe:
    """The cached JPEG ``path`` of ``shot``'s middle frame in ``video`` (whose label it carries)."""

    path: Path
    video: Path
    label: int
    shot: Shot


class KeyframeIndex:
    """Keyframes of a set of videos; ``skips`` lists the videos that could not be decoded.

    ``counts``: videos whose keyframes came from the cache (``reused``) or were extracted now
    (``extracted``), and damaged cache entries found and dropped (``damaged``).
    """

    def __init__(self, keyframes: Sequence[Keyframe], skips: SkipLog, counts: Optional[Dict[str, int]] = None):
        self.keyframes = list(keyframes)
        self.skips = skips
        self.counts = counts or {}
        self._by_video: Dict[Path, List[Keyframe]] = {}
        for kf in self.keyframes:
            self._by_video.setdefault(kf.video, []).append(kf)

    def of(self, video: Path) -> List[Keyframe]:
        """Keyframes of one video in shot order (empty if it was skipped)."""
        return self._by_video.get(Path(video), [])

    def shots(self, video: Path) -> List[Shot]:
        return [kf.shot for kf in self.of(video)]

    def items(self, videos: Sequence[Item], label: Optional[int] = None) -> List[Item]:
        """Keyframe JPEGs of ``videos`` as image items with the video's label (or ``label``)."""
        return [Item(kf.path, kf.label if label is None else label) for v in videos for kf in self.of(v.path)]

    def summary(self) -> str:
        line = f"{len(self.keyframes)} keyframes"
        if self.counts:
            line += f" ({self.counts['reused']} videos reused from the cache, {self.counts['extracted']} extracted)"
            if self.counts["damaged"]:
                line += f"; {self.counts['damaged']} damaged cache entries rebuilt"
        return f"{line}; {self.skips.summary()}"


def extract_task(task) -> object:
    """Worker: ``(path, sha256, VideoInfo, ShotSettings, cache_dir, threads)`` -> the cache entry
    ``{"shots", "files"}`` of the video, its keyframe JPEGs written; or the reason it failed."""
    path, digest, info, settings, cache_dir, threads = task
    try:
        shots, frames = shots_and_keyframes(path, info, settings, threads)
    except CorruptFileError as err:
        return str(err)
    files = []
    for k, frame in enumerate(frames):
        name = f"{KEYFRAME_DIR}/{settings.key}/{digest}_s{k:03d}.jpg"
        save_jpeg(frame, Path(cache_dir) / name, quality=95)
        files.append([name, (Path(cache_dir) / name).stat().st_size])
    return {"shots": [[s.start, s.end] for s in shots], "files": files}


def hash_task(path) -> str:
    """Worker: the content hash of ``path``, or "!" and the reason it cannot be read."""
    try:
        return fingerprint(path)
    except OSError as err:
        return f"!{path}: cannot read ({err})"


def _entry_is_sound(entry, cache_dir: Path) -> bool:
    """Whether a cache entry covers its video with shots and its keyframe files have their sizes."""
    try:
        shots, files = [tuple(shot) for shot in entry["shots"]], entry["files"]
        starts, ends = [a for a, _ in shots], [b for _, b in shots]
        return bool(shots) and len(files) == len(shots) and starts[0] == 0 and starts[1:] == ends[:-1] and all(
            a < b for a, b in shots) and files_intact(cache_dir, entry)
    except (TypeError, KeyError, ValueError):
        return False


def extract_keyframes(
    videos: Sequence[VideoItem],
    cache_dir,
    threshold: float = 27.0,
    min_shot_len: int = 15,
    detect_side: int = 128,
    keyframe_side: Optional[int] = None,
    show_progress: bool = True,
    workers: Optional[int] = None,
    fingerprints: Optional[Dict[Path, str]] = None,
) -> KeyframeIndex:
    """Detect shots in ``videos`` and cache one JPEG keyframe per shot under ``cache_dir``.

    Detection runs on frames whose shorter side is at most ``detect_side``; keyframes are
    stored with shorter side at most ``keyframe_side`` (None = native). Cached results are reused;
    videos are processed in ``workers`` processes (default: one per core), with the same
    results for any number. ``fingerprints``: content hashes already known (e.g.
    ``layout.fingerprints``); the others are computed. Undecodable videos are skipped with one
    warning and listed in ``index.skips``. The cache keeps the entries of ``videos`` only.
    """
    workers = check_workers(workers)
    cache_dir = Path(cache_dir)
    settings = ShotSettings(threshold, min_shot_len, detect_side, keyframe_side)
    journal = Journal(cache_dir / INDEX_NAME)
    digests = dict(fingerprints or {})
    unknown = [Path(v.path) for v in videos if Path(v.path) not in digests]
    skips = SkipLog()
    for i, digest in run_tasks(hash_task, unknown, workers, "hashing videos", "file", show_progress):
        digests[unknown[i]] = digest
    for video in videos:
        if digests[Path(video.path)].startswith("!"):
            skips.skip(video.path, digests[Path(video.path)][1:])
    videos = [v for v in videos if not digests[Path(v.path)].startswith("!")]

    def key(video) -> str:
        return f"{digests[Path(video.path)]}:{settings.key}"

    counts = {"reused": 0, "extracted": 0, "damaged": journal.damaged}
    todo = {}  # one task per distinct content
    for video in videos:
        if _entry_is_sound(journal.get(key(video)), cache_dir):
            counts["reused"] += 1
        elif key(video) not in todo:
            counts["damaged"] += journal.get(key(video)) is not None
            todo[key(video)] = video
    pending = list(todo.values())
    tasks = [(v.path, digests[Path(v.path)], v.info, settings, cache_dir, decode_threads(workers)) for v in pending]
    failed = {}
    for i, entry in run_tasks(extract_task, tasks, workers, "keyframes", "video", show_progress):
        if isinstance(entry, str):
            failed[key(pending[i])] = entry
            journal.forget(key(pending[i]))
        else:
            journal.put(key(pending[i]), entry)
    keyframes = []
    for video in videos:
        if key(video) in failed:
            skips.skip(video.path, failed[key(video)])
            continue
        entry = journal.get(key(video))
        counts["extracted"] += key(video) in todo
        keyframes += [Keyframe(cache_dir / name, Path(video.path), video.label, Shot(*shot))
                      for (name, _), shot in zip(entry["files"], entry["shots"])]
    journal.compact(key(v) for v in videos if key(v) not in failed)
    delete_unreferenced(cache_dir, KEYFRAME_DIR, (name for entry in journal.records.values() for name, _ in entry["files"]))
    return KeyframeIndex(keyframes, skips, counts)
