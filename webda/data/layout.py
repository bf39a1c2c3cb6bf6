"""Discovering a dataset root laid out as the method expects.

::

    ROOT/classes.txt                       optional: one class name per line (fixes the order)
    ROOT/web_images/<class>/**/<image>     any image Pillow decodes (.jpg .png .webp .bmp .gif .tif ...)
    ROOT/web_videos/<class>/**/<video>     any video FFmpeg demuxes (.mp4 .avi .mkv .webm .mov .m4v .mpg ...)
    ROOT/target/train/<class>/**/<video>   target videos; their labels are never used to train
    ROOT/target/test/<class>/**/<video>    labeled target videos for evaluation

Target videos may also sit directly in ``target/train`` (or directly in ``target/`` when there
are no splits): they are then unlabeled (label -1). Without ``classes.txt`` the classes are the
sorted names of the class folders under ``web_images`` and ``web_videos``.

Class folders are read recursively: a crawler's one folder per query (``web_images/dog/query
1/*.jpg``) is part of its class. Files are found by extension (any case; see
``webda.data.images.IMAGE_EXTENSIONS`` and ``webda.data.video.VIDEO_EXTENSIONS``). Everything
else is ignored and counted by extension in the summary ("ignored: 3 .txt, 2 .heic"): files of
another kind, hidden files and folders (names starting with "."), and files outside any class
folder. :func:`discover` then checks each media file (in ``workers`` processes) and skips
unreadable ones with one warning each (a dangling link or a link loop is unreadable too; so are
a folder that cannot be listed and a folder link to a folder already read). With a cache
folder, a file whose path, size and modification time match the cache is not read again (see
:mod:`webda.data.cache`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from webda.data.cache import Journal, fingerprint
from webda.data.images import IMAGE_EXTENSIONS, probe_image
from webda.data.parallel import check_workers, run_tasks
from webda.data.skips import CorruptFileError, SkipLog
from webda.data.video import VIDEO_EXTENSIONS, VideoInfo, probe_video
from webda.errors import UserError

UNLABELED = -1
FILES_JOURNAL = "files.jsonl"
_PROBE_FORMAT = 2  # of the files journal's records: a new value when what the probes accept changes


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
    """Everything :func:`discover` found under ``root``; items are sorted by path.

    ``image_sizes``: (width, height) of each web image. ``fingerprints`` (with a cache folder):
    each readable file's content hash; ``files_reused``: how many files the cache spared from
    being read.
    """

    root: Path
    classes: Tuple[str, ...]
    web_images: List[Item]
    web_videos: List[VideoItem]
    target: Dict[str, List[VideoItem]]
    skips: SkipLog
    image_sizes: Dict[Path, Tuple[int, int]] = field(default_factory=dict)
    fingerprints: Dict[Path, str] = field(default_factory=dict)
    files_reused: int = 0

    def target_videos(self, split: Optional[str] = None) -> List[VideoItem]:
        """Target videos of one split, or of all splits when ``split`` is None."""
        if split is None:
            return [item for items in self.target.values() for item in items]
        if split not in self.target:
            raise UserError(f"no target split {split!r} under {self.root / 'target'}; found {sorted(self.target)}")
        return self.target[split]

    def without(self, paths: Iterable) -> "DatasetLayout":
        """This layout less the items of ``paths`` (files found unreadable after discovery);
        :class:`~webda.errors.UserError` as :func:`discover` when a class or a target split is left
        with nothing readable."""
        paths = {Path(p) for p in paths}

        def keep(items):
            return [item for item in items if item.path not in paths]

        layout = replace(self, web_images=keep(self.web_images), web_videos=keep(self.web_videos),
                         target={split: keep(videos) for split, videos in self.target.items()})
        layout._check_readable()
        return layout

    def _check_readable(self) -> None:
        """:class:`~webda.errors.UserError` unless every class has a web image or video and every
        target split a video."""
        for label, name in enumerate(self.classes):
            if not any(i.label == label for i in self.web_images) and not any(v.label == label for v in self.web_videos):
                raise UserError(f"class {name!r} has no readable files in {self.root / 'web_images'} or "
                                f"{self.root / 'web_videos'}")
        for split, videos in self.target.items():
            if not videos:
                raise UserError(f"no readable target videos for target split {split!r} under {self.root / 'target'}")

    def summary(self) -> str:
        """Counts of what was found, per kind, and of what was skipped or ignored."""
        target = ", ".join(f"{len(v)} target/{k}" for k, v in self.target.items())
        return (
            f"{len(self.classes)} classes, {len(self.web_images)} web images, "
            f"{len(self.web_videos)} web videos, {target}; {self.skips.summary()}"
        )


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _media_files(folder: Path, extensions: Sequence[str], skips: SkipLog) -> List[Path]:
    """Files with one of ``extensions`` under ``folder`` and its sub-folders, sorted (folder links
    followed, each real folder once); the rest goes to ``skips.ignore``. A folder that cannot be
    listed, or a folder link that leads to a folder already read (a loop), is skipped."""
    found, ignored, seen = [], [], {}

    def unlisted(err: OSError) -> None:
        skips.skip(Path(err.filename), f"cannot list folder ({err.strerror})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted, followlinks=True):
        stat = os.stat(dirpath)
        first = seen.setdefault((stat.st_dev, stat.st_ino), dirpath)
        if first != dirpath:  # a folder link: to a folder above (a loop) or beside it
            skips.skip(Path(dirpath), f"folder already read as {first}")
            dirnames[:] = []
            continue
        here = Path(dirpath)
        ignored += [here / d for d in dirnames if d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = here / name
            (found if not _hidden(path) and path.suffix.lower() in extensions else ignored).append(path)
    skips.ignore(sorted(ignored))
    return sorted(found)


def _class_dirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p))


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


def _labeled_files(folder: Path, classes: Sequence[str], extensions: Sequence[str], allow_loose: bool,
                   skips: SkipLog):
    """(path, label) for ``folder/<class>/**`` plus, if ``allow_loose``, unlabeled ``folder/*``;
    other loose files and hidden entries of ``folder`` are ignored."""
    index = {name: i for i, name in enumerate(classes)}
    loose = sorted(p for p in folder.iterdir() if not p.is_dir() or _hidden(p))
    usable = [p for p in loose if allow_loose and not _hidden(p) and p.suffix.lower() in extensions]
    skips.ignore(p for p in loose if p not in usable)
    found = [(p, UNLABELED) for p in usable]
    for class_dir in _class_dirs(folder):
        if class_dir.name not in index:
            raise UserError(f"{class_dir} is not one of the classes {list(classes)}")
        files = _media_files(class_dir, extensions, skips)
        if not files:
            kind = "image" if extensions is IMAGE_EXTENSIONS else "video"
            raise UserError(f"class folder {class_dir} holds no {kind} files (looked for {', '.join(extensions)})")
        found += [(p, index[class_dir.name]) for p in files]
    return found


def check_file(task) -> Tuple[Optional[str], object]:
    """Worker: ``(path, kind, hash)`` -> (content hash or None, then ``VideoInfo`` for a readable
    video, (width, height) for a readable image, or the reason the file cannot be read)."""
    path, kind, hash_it = task
    try:
        digest = fingerprint(path) if hash_it else None
        return digest, probe_image(path) if kind == "images" else probe_video(path)
    except CorruptFileError as err:
        return None, str(err)
    except OSError as err:  # from hashing: a vanished, unreadable or dangling file
        return None, f"{path}: cannot read ({err})"


class _Checker:
    """Checks files in ``workers`` processes; with a ``journal``, a file whose resolved path,
    size and mtime match its record is not read again (``reused`` counts those)."""

    def __init__(self, skips: SkipLog, workers: int, journal: Optional[Journal], show_progress: bool):
        self.skips, self.workers, self.journal, self.show_progress = skips, workers, journal, show_progress
        self.fingerprints: Dict[Path, str] = {}
        self.image_sizes: Dict[Path, Tuple[int, int]] = {}
        self.reused = 0
        self._live: List[str] = []

    def check(self, entries) -> Dict[Path, Item]:
        """{path: item} of the readable files of ``entries`` ((path, label, "images" or "videos"))."""
        results, todo = {}, []
        for path, _, kind in entries:
            stat = self._stat(path)
            cached = self._cached(stat, kind)
            if cached is None:
                todo.append((path, stat, kind))
            else:
                results[path] = cached
                self.reused += 1
        tasks = [(path, kind, self.journal is not None) for path, _, kind in todo]
        for i, (digest, outcome) in run_tasks(check_file, tasks, self.workers, "checking files", "file",
                                               self.show_progress):
            path, stat, kind = todo[i]
            results[path] = (digest, outcome)
            if digest is not None and stat is not None:
                info = list(outcome) if kind == "images" else outcome.as_record()
                self.journal.put(stat[0], {"size": stat[1], "mtime_ns": stat[2], "sha256": digest, "kind": kind,
                                           "info": info, "format": _PROBE_FORMAT})
        items = {}
        for path, label, kind in entries:
            digest, outcome = results[path]
            if isinstance(outcome, str):
                self.skips.skip(path, outcome)
                continue
            if digest is not None:
                self.fingerprints[path] = digest
            if kind == "images":
                self.image_sizes[path] = outcome
                items[path] = Item(path, label)
            else:
                items[path] = VideoItem(path, label, outcome)
        return items

    def _stat(self, path: Path) -> Optional[Tuple[str, int, int]]:
        if self.journal is None:
            return None
        try:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        except OSError:
            return None
        self._live.append(key[0])
        return key

    def _cached(self, stat, kind: str):
        """(hash, probe result) from the journal's record of ``stat``'s path, if it still matches."""
        record = self.journal.get(stat[0]) if stat is not None else None
        try:
            if (record["size"], record["mtime_ns"], record["kind"], record["format"]) != (
                    stat[1], stat[2], kind, _PROBE_FORMAT):
                return None
            if kind == "images":
                width, height = record["info"]
                return str(record["sha256"]), (int(width), int(height))
            return str(record["sha256"]), VideoInfo.from_record(record["info"])
        except (TypeError, KeyError, ValueError):
            return None

    def finish(self) -> None:
        """Drop the journal's records of files no longer in the dataset."""
        if self.journal is not None:
            self.journal.compact(self._live)


def discover(root, show_progress: bool = False, workers: Optional[int] = None, cache_dir=None) -> DatasetLayout:
    """Find and check every web image, web video and target video under ``root``.

    ``workers``: processes that check files (default: one per core). ``cache_dir``: where the
    ``files`` journal lives (see :mod:`webda.data.cache`); without it nothing is cached or hashed.
    Raises :class:`~webda.errors.UserError` for a missing folder, an unknown or empty class
    folder, or a class with neither web images nor web videos. Unreadable files are skipped
    (one warning each) and listed in ``layout.skips``, as are ignored files.
    """
    workers = check_workers(workers)
    root = _require_dir(Path(root))
    web_images_dir = _require_dir(root / "web_images")
    web_videos_dir = _require_dir(root / "web_videos")
    target_dir = _require_dir(root / "target")
    classes = read_classes(root)
    skips = SkipLog()
    journal = Journal(Path(cache_dir) / FILES_JOURNAL) if cache_dir is not None else None

    image_pairs = _labeled_files(web_images_dir, classes, IMAGE_EXTENSIONS, False, skips)
    video_pairs = _labeled_files(web_videos_dir, classes, VIDEO_EXTENSIONS, False, skips)
    split_dirs = _class_dirs(target_dir)
    if any(d.name in ("train", "test") for d in split_dirs):
        skips.ignore(sorted(p for p in target_dir.iterdir() if p not in split_dirs))
    else:
        split_dirs = [target_dir]
    splits = {("train" if d == target_dir else d.name): d for d in split_dirs}
    target_pairs = {split: _labeled_files(d, classes, VIDEO_EXTENSIONS, True, skips) for split, d in splits.items()}

    checker = _Checker(skips, workers, journal, show_progress)
    videos = video_pairs + [pair for pairs in target_pairs.values() for pair in pairs]
    found = checker.check([(p, label, "images") for p, label in image_pairs] + [(p, label, "videos") for p, label in videos])
    checker.finish()
    web_images = [found[p] for p, _ in image_pairs if p in found]
    web_videos = [found[p] for p, _ in video_pairs if p in found]
    target = {split: [found[p] for p, _ in pairs if p in found] for split, pairs in target_pairs.items()}
    layout = DatasetLayout(root, classes, web_images, web_videos, target, skips, checker.image_sizes,
                           checker.fingerprints, checker.reused)
    layout._check_readable()
    return layout
