"""Discovering a dataset root laid out as the method expects.

::

    ROOT/classes.txt                       optional: one class name per line (fixes the order)
    ROOT/web_images/<class>/*.{jpg,jpeg,png}
    ROOT/web_videos/<class>/*.{mp4,avi,mkv,webm,mov}
    ROOT/target/train/<class>/*.mp4        target videos; their labels are never used to train
    ROOT/target/test/<class>/*.mp4         labeled target videos for evaluation

Target videos may also sit directly in ``target/train`` (or directly in ``target/`` when there
are no splits): they are then unlabeled (label -1). Without ``classes.txt`` the classes are the
sorted names of the class folders under ``web_images`` and ``web_videos``. Files are found by
extension; :func:`discover` then probes each one and skips unreadable files with one warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from webda.data.images import IMAGE_EXTENSIONS, probe_image
from webda.data.skips import CorruptFileError, SkipLog
from webda.data.video import VIDEO_EXTENSIONS, VideoInfo, probe_video
from webda.errors import UserError

UNLABELED = -1


@dataclass(frozen=True)
class Item:
    """One image or video file and its (web or ground-truth) class index; -1 when unlabeled."""

    path: Path
    label: int


@dataclass(frozen=True)
class VideoItem(Item):
    """A video file with what its probe found (frame count, fps, size)."""

    info: VideoInfo


@dataclass
class DatasetLayout:
    """Everything :func:`discover` found under ``root``; items are sorted by path."""

    root: Path
    classes: Tuple[str, ...]
    web_images: List[Item]
    web_videos: List[VideoItem]
    target: Dict[str, List[VideoItem]]
    skips: SkipLog

    def target_videos(self, split: Optional[str] = None) -> List[VideoItem]:
        """Target videos of one split, or of all splits when ``split`` is None."""
        if split is None:
            return [item for items in self.target.values() for item in items]
        if split not in self.target:
            raise UserError(f"no target split {split!r} under {self.root / 'target'}; found {sorted(self.target)}")
        return self.target[split]

    def summary(self) -> str:
        """Counts of what was found, per kind, and of what was skipped."""
        target = ", ".join(f"{len(v)} target/{k}" for k, v in self.target.items())
        return (
            f"{len(self.classes)} classes, {len(self.web_images)} web images, "
            f"{len(self.web_videos)} web videos, {target}; {self.skips.summary()}"
        )


def _files(folder: Path, extensions: Sequence[str]) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def _class_dirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise UserError(f"missing folder {path}")
    return path


def read_classes(root: Path) -> Tuple[str, ...]:
    """Class names from ``ROOT/classes.txt``, else the class folders of the web data."""
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if len(set(names)) != len(names) or not names:
            raise UserError(f"{listed} must list distinct class names, one per line")
        return tuple(names)
    names = {d.name for kind in ("web_images", "web_videos") for d in _class_dirs(root / kind)}
    if not names:
        raise UserError(f"no class folders under {root / 'web_images'} or {root / 'web_videos'}")
    return tuple(sorted(names))


def _labeled_files(folder: Path, classes: Sequence[str], extensions: Sequence[str], allow_loose: bool):
    """(path, label) for ``folder/<class>/*`` plus, if ``allow_loose``, unlabeled ``folder/*``."""
    index = {name: i for i, name in enumerate(classes)}
    found = [(p, UNLABELED) for p in _files(folder, extensions)] if allow_loose else []
    for class_dir in _class_dirs(folder):
        if class_dir.name not in index:
            raise UserError(f"{class_dir} is not one of the classes {list(classes)}")
        files = _files(class_dir, extensions)
        if not files:
            raise UserError(f"class folder {class_dir} has no {'/'.join(extensions)} files")
        found += [(p, index[class_dir.name]) for p in files]
    return found


def _probe_all(pairs, kind: str, skips: SkipLog, show_progress: bool):
    items = []
    for path, label in tqdm(pairs, desc=f"checking {kind}", unit="file", disable=not show_progress, leave=False):
        try:
            if kind == "images":
                probe_image(path)
                items.append(Item(path, label))
            else:
                items.append(VideoItem(path, label, probe_video(path)))
        except CorruptFileError as err:
            skips.skip(path, str(err))
    return items


def discover(root, show_progress: bool = False) -> DatasetLayout:
    """Find and check every web image, web video and target video under ``root``.

    Raises :class:`~webda.errors.UserError` for a missing folder, an unknown or empty class
    folder, or a class with neither web images nor web videos. Unreadable files are skipped
    (one warning each) and listed in ``layout.skips``.
    """
    root = _require_dir(Path(root))
    web_images_dir = _require_dir(root / "web_images")
    web_videos_dir = _require_dir(root / "web_videos")
    target_dir = _require_dir(root / "target")
    classes = read_classes(root)
    skips = SkipLog()

    web_images = _probe_all(
        _labeled_files(web_images_dir, classes, IMAGE_EXTENSIONS, False), "images", skips, show_progress
    )
    web_videos = _probe_all(
        _labeled_files(web_videos_dir, classes, VIDEO_EXTENSIONS, False), "videos", skips, show_progress
    )
    for label, name in enumerate(classes):
        if not any(i.label == label for i in web_images) and not any(v.label == label for v in web_videos):
            raise UserError(f"class {name!r} has no readable files in {web_images_dir} or {web_videos_dir}")

    split_dirs = _class_dirs(target_dir)
    if not any(d.name in ("train", "test") for d in split_dirs):
        split_dirs = [target_dir]
    target = {}
    for split_dir in split_dirs:
        split = "train" if split_dir == target_dir else split_dir.name
        pairs = _labeled_files(split_dir, classes, VIDEO_EXTENSIONS, True)
        target[split] = _probe_all(pairs, "videos", skips, show_progress)
        if not target[split]:
            raise UserError(f"no readable target videos in {split_dir}")
    return DatasetLayout(root, classes, web_images, web_videos, target, skips)
