"""Shot boundaries and one keyframe per shot, cached as JPEG files with an index.

Shots come from PySceneDetect's ``ContentDetector`` (mean change of hue, saturation and
luminance between consecutive frames above ``threshold``, shots at least ``min_shot_len``
frames), fed with frames decoded by :mod:`webda.data.video`. The paper used Hecate; any shot
detector fits here. The keyframe of a shot is its middle frame.

Cache layout (``cache_dir``)::

    keyframes.json           {"params": {...}, "videos": {video path: {"size", "mtime_ns", "shots", "files"}}}
    keyframes/<key>_<stem>_s<k>.jpg

A video is processed again only when its size, modification time or the detector settings
change, so stage 1 reads images and never decodes a video twice across runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode
from tqdm.auto import tqdm

from webda.data.images import save_jpeg
from webda.data.layout import Item, VideoItem
from webda.data.skips import CorruptFileError, SkipLog
from webda.data.video import iter_frames, read_frames

INDEX_NAME = "keyframes.json"


@dataclass(frozen=True)
class Shot:
    """Frames ``start`` (inclusive) to ``end`` (exclusive) of one video."""

    start: int
    end: int

    @property
    def keyframe(self) -> int:
        """The middle frame, the shot's representative."""
        return (self.start + self.end) // 2


def detect_shots(
    path, threshold: float = 27.0, min_shot_len: int = 15, short_side: Optional[int] = None, fps: float = 25.0
) -> List[Shot]:
    """Shots of the video at ``path``, in order, covering every frame.

    ``short_side`` downsizes frames for detection (None = native size); ``fps`` only labels
    the detector's timecodes (``min_shot_len`` is in frames). Raises CorruptFileError.
    """
    detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_len)
    cuts, num_frames = [], 0
    for index, frame in enumerate(iter_frames(path, short_side)):
        cuts += detector.process_frame(FrameTimecode(index, fps=fps), frame[:, :, ::-1].copy())  # RGB -> BGR
        num_frames = index + 1
    if num_frames == 0:
        raise CorruptFileError(f"{path}: video has no frames")
    cuts += detector.post_process(FrameTimecode(num_frames - 1, fps=fps))
    bounds = [0] + sorted({c.frame_num for c in cuts if 0 < c.frame_num < num_frames}) + [num_frames]
    return [Shot(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class Keyframe:
    """The cached JPEG ``path`` of ``shot``'s middle frame in ``video`` (whose label it carries)."""

    path: Path
    video: Path
    label: int
    shot: Shot


class KeyframeIndex:
    """Keyframes of a set of videos; ``skips`` lists the videos that could not be decoded."""

    def __init__(self, keyframes: Sequence[Keyframe], skips: SkipLog):
        self.keyframes = list(keyframes)
        self.skips = skips
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


def _video_key(path: Path) -> str:
    return str(Path(path).resolve())


def extract_keyframes(
    videos: Sequence[VideoItem],
    cache_dir,
    threshold: float = 27.0,
    min_shot_len: int = 15,
    detect_side: int = 128,
    keyframe_side: Optional[int] = None,
    show_progress: bool = True,
) -> KeyframeIndex:
    """Detect shots in ``videos`` and cache one JPEG keyframe per shot under ``cache_dir``.

    Detection runs on frames whose shorter side is at most ``detect_side``; keyframes are
    stored with shorter side ``keyframe_side`` (None = native). Cached results are reused.
    Undecodable videos are skipped with one warning and listed in ``index.skips``.
    """
    cache_dir = Path(cache_dir)
    (cache_dir / "keyframes").mkdir(parents=True, exist_ok=True)
    params = {"threshold": threshold, "min_shot_len": min_shot_len, "detect_side": detect_side,
              "keyframe_side": keyframe_side}
    index_path = cache_dir / INDEX_NAME
    cached = json.loads(index_path.read_text()) if index_path.is_file() else {}
    entries = cached.get("videos", {}) if cached.get("params") == params else {}
    skips, keyframes = SkipLog(), []
    for video in tqdm(videos, desc="keyframes", unit="video", disable=not show_progress, leave=False):
        key, stat = _video_key(video.path), Path(video.path).stat()
        entry = entries.get(key)
        if not (entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns
                and all((cache_dir / f).is_file() for f in entry["files"])):
            try:
                entry = _extract_one(video, key, stat, cache_dir, params)
            except CorruptFileError as err:
                skips.skip(video.path, str(err))
                entries.pop(key, None)
                continue
            entries[key] = entry
        keyframes += [Keyframe(cache_dir / f, Path(video.path), video.label, Shot(*s))
                      for f, s in zip(entry["files"], entry["shots"])]
    index_path.write_text(json.dumps({"params": params, "videos": entries}, indent=1, sort_keys=True))
    return KeyframeIndex(keyframes, skips)


def _extract_one(video: VideoItem, key: str, stat, cache_dir: Path, params: dict) -> dict:
    short = min(video.info.width, video.info.height)
    shots = detect_shots(video.path, params["threshold"], params["min_shot_len"],
                         min(params["detect_side"], short), video.info.fps)
    frames = read_frames(video.path, [s.keyframe for s in shots], params["keyframe_side"])
    stem = f"{hashlib.sha1(key.encode()).hexdigest()[:10]}_{Path(video.path).stem}"
    files = []
    for k, frame in enumerate(frames):
        files.append(f"keyframes/{stem}_s{k:03d}.jpg")
        save_jpeg(frame, cache_dir / files[-1], quality=95)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "shots": [[s.start, s.end] for s in shots],
            "files": files}
