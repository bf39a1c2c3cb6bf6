"""Bad input never crashes and never lies, in the data layer (issue 17): each row of :data:`ROWS`
writes one really damaged (or unusual) file into a copy of a small generated dataset and runs
the preparation; the file is used correctly, or skipped, counted and named, and every other file
is used. :data:`CACHE_DAMAGE` does the same for each index file of the cache; the last tests run
the command line (``prepare-data``, a 2-step ``train-image``) on a dataset holding every row's file.
"""

import os
import shutil
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_train_flags
from webda.cli import main
from webda.data.cache import DamagedCacheWarning, Journal, fingerprint
from webda.data.images import load_image
from webda.data.prepare import prepare

SIDE = 32  # every tiny web image is larger: each gets a downscaled copy, so the copies are tested too


# ---- writing damaged files ----

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(path: Path, width: int, height: int, depth: int, color_type: int, idat: bytes) -> Path:
    """A PNG with this header and compressed pixel data (written by hand: Pillow writes no
    16-bit colour, and the chunks' CRCs must be right for damaged data to pass as sound)."""
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def _png_pixels(path: Path, pixels: np.ndarray, color_type: int, depth: int = 8) -> Path:
    """``pixels`` (H, W, C) as a PNG of ``depth`` bits per sample (filter 0 on every row)."""
    height, width = pixels.shape[:2]
    dtype = ">u2" if depth == 16 else np.uint8
    raw = b"".join(b"\0" + row.astype(dtype).tobytes() for row in pixels)
    return _png(path, width, height, depth, color_type, zlib.compress(raw))


def _bomb(path: Path, width: int, height: int) -> Path:
    """A complete, valid 1-bit black PNG of ``width`` x ``height`` pixels: a few kB on disk."""
    raw = bytes((1 + (width + 7) // 8) * height)
    return _png(path, width, height, 1, 0, zlib.compress(raw, 1))


def _link(path: Path, target) -> Path:
    os.symlink(target, path)
    return path


def _non_utf8(folder: Path, name: bytes) -> Path:
    """``folder / name`` for a name that is not UTF-8 (as ``os.walk`` gives it: surrogate escapes)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


@dataclass(frozen=True)
class Sources:
    """Sound files of the dataset copy that rows start from; ``picture``: the uint8 (H, W, 3) of ``image``."""

    image: Path
    video: Path
    target_video: Path
    picture: np.ndarray

    @property
    def grey(self) -> np.ndarray:
        return self.picture[..., 0]


def _class_dir(root: Path, kind: str) -> Path:
    return sorted((root / kind).iterdir())[0]


# ---- the rows ----

@dataclass(frozen=True)
class Row:
    """``make(root, sources)`` writes the file(s) of the row under ``root`` and returns them.

    ``reason``: a word every skip reason of them contains; None when the file is used, then
    ``looks`` ("grey" or "rgb") says which 8-bit picture of ``sources`` it must decode to (or
    None: used without a picture to compare).
    """

    name: str
    make: Callable[[Path, Sources], List[Path]]
    reason: Optional[str]
    looks: Optional[str] = None


def _16bit(color_type: int):
    def make(root, src):
        channels = {0: src.grey[..., None], 2: src.picture, 4: np.dstack([src.grey, np.full_like(src.grey, 255)]),
                    6: np.dstack([src.picture, np.full_like(src.grey, 255)])}[color_type]
        return [_png_pixels(_class_dir(root, "web_images") / f"deep_{color_type}.png", channels.astype(np.uint32) * 257,
                            color_type, depth=16)]
    return make


def _tiff(name: str, values: Callable[[Sources], np.ndarray]):
    def make(root, src):
        path = _class_dir(root, "web_images") / name
        Image.fromarray(values(src)).save(path)
        return [path]
    return make


def _pgm16(root, src):
    path = _class_dir(root, "web_images") / "deep.pgm"
    height, width = src.grey.shape
    path.write_bytes(f"P5\n{width} {height}\n65535\n".encode() + (src.grey.astype(">u2") * 257).tobytes())
    return [path]


def _broken_zlib(cut: bool):
    def make(root, src):
        data = zlib.compress(b"".join(b"\0" + row.tobytes() for row in src.picture))
        data = data[:len(data) // 2] if cut else data[:60] + bytes([data[60] ^ 0xFF]) + data[61:]
        height, width = src.grey.shape
        return [_png(_class_dir(root, "web_images") / f"web_{'cut' if cut else 'flipped'}.png", width, height, 8, 2, data)]
    return make


def _symlinks(kind: str, suffix: str):
    def make(root, src):
        folder = _class_dir(root, kind)
        loop = [_link(folder / f"loop_a{suffix}", folder / f"loop_b{suffix}"),
                _link(folder / f"loop_b{suffix}", folder / f"loop_a{suffix}")]
        return [_link(folder / f"dangling{suffix}", folder / f"gone{suffix}"), _link(folder / f"self{suffix}",
                f"self{suffix}")] + loop
    return make


def _copy(source: Callable[[Sources], Path], kind: str, name):
    def make(root, src):
        folder = _class_dir(root, kind)
        path = _non_utf8(folder, name) if isinstance(name, bytes) else folder / name
        shutil.copy(source(src), path)
        return [path]
    return make


def _truncated_non_utf8(root, src):
    path = _non_utf8(_class_dir(root, "target/test"), b"cut-\xff\xfe.mp4")
    path.write_bytes(src.target_video.read_bytes()[:700])
    return [path]


def _unlistable(root, src):
    folder = _class_dir(root, "web_images") / "locked"
    folder.mkdir()
    shutil.copy(src.image, folder / "a.jpg")
    folder.chmod(0)
    return [folder]


ROWS = [
    # 1. wider than 8 bits: scaled, never clipped; refused where 8 bits cannot say it
    Row("png_16bit_grey", _16bit(0), None, "grey"),
    Row("png_16bit_grey_alpha", _16bit(4), None, "grey"),
    Row("png_16bit_rgb", _16bit(2), None, "rgb"),
    Row("png_16bit_rgba", _16bit(6), None, "rgb"),
    Row("tiff_16bit_grey_little_endian", _tiff("deep_le.tif", lambda s: s.grey.astype("<u2") * 257), None, "grey"),
    Row("tiff_16bit_grey_big_endian", _tiff("deep_be.tif", lambda s: s.grey.astype(">u2") * 257), None, "grey"),
    Row("pgm_16bit_read_as_32bit_int", _pgm16, None, "grey"),
    Row("tiff_float_0_to_1", _tiff("float.tif", lambda s: s.grey.astype(np.float32) / 255), None, "grey"),
    Row("tiff_float_0_to_255", _tiff("float_255.tif", lambda s: s.grey.astype(np.float32)), "no 8-bit meaning"),
    Row("tiff_int32_negative", _tiff("negative.tif", lambda s: s.grey.astype(np.int32) - 256), "no 8-bit meaning"),
    # 2. links that lead nowhere, or round in circles
    Row("symlinks_jpg", _symlinks("web_images", ".jpg"), "symbolic links|No such file"),
    Row("symlinks_mp4", _symlinks("web_videos", ".mp4"), "symbolic links|No such file"),
    Row("folder_link_loop_jpg", lambda root, src: [_link(_class_dir(root, "web_images") / "up.jpg", ".")],
        "already read"),
    # 3. an image is not a video, whatever its name
    Row("jpeg_renamed_mp4", _copy(lambda s: s.image, "web_videos", "photo.mp4"), "not a video"),
    Row("png_renamed_avi_in_target", lambda root, src: [
        _png_pixels(_class_dir(root, "target/train") / "still.avi", src.picture, 2)], "not a video"),
    # 4. long names are used; nothing in the cache is named after them
    Row("target_name_240_chars", _copy(lambda s: s.target_video, "target/train", "t" * 240 + ".mp4"), None),
    Row("web_image_name_250_chars", _copy(lambda s: s.image, "web_images", "w" * 250 + ".jpg"), None, "rgb"),
    # 5. decompression bombs: over PIL.Image.MAX_IMAGE_PIXELS (Pillow's warning), and over twice it (its error)
    Row("bomb_100_megapixels", lambda root, src: [_bomb(_class_dir(root, "web_images") / "bomb.png", 10000, 10000)],
        "exceeds limit"),
    Row("bomb_200_megapixels", lambda root, src: [_bomb(_class_dir(root, "web_images") / "bomb2.png", 20000, 10000)],
        "exceeds limit"),
    # 6. broken zlib data behind sound PNG chunks: the header probe passes, the full decode at embedding does not
    Row("png_zlib_byte_flipped", _broken_zlib(cut=False), "broken data stream"),
    Row("png_zlib_cut", _broken_zlib(cut=True), "truncated"),
    # 7. names that are not UTF-8: used when sound, named when not
    Row("non_utf8_video_name", _copy(lambda s: s.video, "web_videos", b"clip-\xff\xfe.mp4"), None),
    Row("non_utf8_broken_target_name", _truncated_non_utf8, "video"),
]
UNLISTABLE = Row("unlistable_folder", _unlistable, "cannot list folder")


# ---- preparing copies ----

def _prepare(root: Path, cache: Path, categories: Optional[list] = None):
    """(prepare(...), messages of the warnings it issued); their categories appended to ``categories``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = prepare(root, cache, image_side=SIDE, workers=1, show_progress=False)
    if categories is not None:
        categories += [w.category for w in caught]
    return data, [str(w.message) for w in caught]


def _items(data) -> set:
    layout = data.layout
    return {item.path.relative_to(layout.root) for item in layout.web_images + layout.web_videos + layout.target_videos()}


def _skipped(data) -> dict:
    return dict(data.layout.skips.skipped + data.keyframes.skips.skipped)


@pytest.fixture(scope="module")
def base(tiny_dataset, mini_copy, tmp_path_factory):
    """(root, cache, prepared) of a clean copy; rows start from copies of both (a warm cache keeps them fast)."""
    folder = tmp_path_factory.mktemp("bad_files_base")
    root = mini_copy(tiny_dataset, folder / "data")
    data, messages = _prepare(root, folder / "cache")
    assert not messages and not _skipped(data)
    return root, folder / "cache", data


def _sources(root: Path, data) -> Sources:
    image = next(i.path for i in data.web_images if i.path.suffix == ".jpg")
    return Sources(root / image.relative_to(data.layout.root), root / data.web_videos[0].path.relative_to(data.layout.root),
                   root / data.layout.target_videos("train")[0].path.relative_to(data.layout.root),
                   load_image(image))


def _copy_base(base, tmp_path):
    root, cache, data = base
    shutil.copytree(root, tmp_path / "data", symlinks=True)
    shutil.copytree(cache, tmp_path / "cache")
    return tmp_path / "data", tmp_path / "cache", _sources(tmp_path / "data", data)


def _check_row(row: Row, files: List[Path], data, messages, base_items: set, src: Sources) -> None:
    """The row's files are used (and decode to the picture they hold) or skipped, counted and named;
    every other file is used."""
    root = data.layout.root
    skipped = _skipped(data)
    relative = {f.relative_to(root) for f in files}
    if row.reason is None:
        assert _items(data) == base_items | relative and not skipped and not messages
        for path in files:
            if row.looks is not None:
                expected = src.picture if row.looks == "rgb" else np.repeat(src.grey[..., None], 3, axis=2)
                np.testing.assert_array_equal(load_image(path), expected)
        return
    assert _items(data) == base_items
    for path in files:
        assert any(word in skipped[path] for word in row.reason.split("|")), skipped[path]
        assert sum(f"skipping {path}: " in m for m in messages) == 1, messages  # named once, in one warning
    assert set(skipped) == set(files)
    assert f"{len(files)} unreadable files skipped" in data.summary()


@pytest.mark.parametrize("row", ROWS + [UNLISTABLE], ids=lambda row: row.name)
def test_bad_file_is_used_or_skipped_counted_and_named(row, base, tmp_path):
    root, cache, src = _copy_base(base, tmp_path)
    files = row.make(root, src)
    try:
        if row is UNLISTABLE and os.access(files[0], os.R_OK):
            pytest.skip("this process reads any folder (root)")
        data, messages = _prepare(root, cache)
        _check_row(row, files, data, messages, _items(base[2]), src)
    finally:
        if row is UNLISTABLE:
            files[0].chmod(0o755)
    if row.name.endswith("_chars"):  # the cache names what it holds by content, whatever the file is called
        assert max(len(p.name) for p in cache.rglob("*")) <= 100


# ---- the cache's index files ----

def _garbage_line(path: Path) -> None:
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:1] + [b'{"crc": 1, "key": "x", "rec'] + lines[1:]) + b"\n")


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _wrong_shape(path: Path) -> None:
    """Every record replaced by a list, with a valid checksum (an older format, say): checked, not trusted."""
    old = Journal(path)
    path.unlink()
    new = Journal(path)
    for key in old.records:
        new.put(key, ["not", "a", "record"])


def _cut_shard(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


CACHE_DAMAGE = [
    ("files.jsonl", _garbage_line, True), ("keyframes.jsonl", _random_bytes, True),
    ("images.jsonl", _garbage_line, True), ("files.jsonl", _wrong_shape, False),
    ("keyframes.jsonl", _wrong_shape, False), ("images.jsonl", _wrong_shape, False),
    ("embeddings/default/000000.npz", _cut_shard, True),
]


@pytest.mark.parametrize("name, damage, warned", CACHE_DAMAGE,
                         ids=[f"{name}-{damage.__name__.strip('_')}" for name, damage, _ in CACHE_DAMAGE])
def test_damaged_cache_index_is_rebuilt_with_one_line(name, damage, warned, base, tmp_path):
    root, cache, _ = _copy_base(base, tmp_path)
    damage(cache / name)
    categories = []
    data, messages = _prepare(root, cache, categories)
    assert categories == [DamagedCacheWarning] * warned and all(str(cache / name) in m for m in messages)
    assert _items(data) == _items(base[2]) and not _skipped(data)
    assert [i.path.relative_to(root) for i in data.web_images] == [i.path.relative_to(base[0]) for i in base[2].web_images]
    assert len(data.keyframes.keyframes) == len(base[2].keyframes.keyframes)
    assert _prepare(root, cache)[1] == []  # rebuilt: the next run finds nothing wrong


def test_probe_record_of_an_older_probe_is_not_trusted(base, tmp_path):
    root, cache, src = _copy_base(base, tmp_path)
    photo = _class_dir(root, "web_videos") / "photo.mp4"
    shutil.copy(src.image, photo)
    stat = photo.stat()  # what the probe recorded before it told images from videos: a 1-frame video
    Journal(cache / "files.jsonl").put(str(photo.resolve()), {
        "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": fingerprint(photo), "kind": "videos",
        "info": [1, 25.0, *src.grey.shape, [], 0]})
    data, _ = _prepare(root, cache)
    assert "not a video" in _skipped(data)[photo]


# ---- the command line on a dataset with every bad file at once ----

@pytest.fixture(scope="module")
def all_bad(base, tmp_path_factory):
    """(root, cache, {path: row}) of a copy holding every row's files."""
    root, cache, src = _copy_base(base, tmp_path_factory.mktemp("all_bad"))
    return root, cache, {path: row for row in ROWS for path in row.make(root, src)}


def test_prepare_data_cli_names_every_bad_file_and_shows_no_bars(all_bad, capfd):
    root, cache, files = all_bad
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["prepare-data", str(root), "--cache", str(cache), "--workers", "2", "--no-progress"]) == 0
    out, err = capfd.readouterr()
    bad = [path for path, row in files.items() if row.reason is not None]
    assert f"{len(bad)} unreadable files skipped" in out
    for path in bad:
        assert sum(f"skipping {path}: " in str(w.message) for w in caught) == 1
    assert "Traceback" not in err and "%|" not in err  # no progress bar (tqdm draws "NN%|")
    with warnings.catch_warnings(record=True):
        assert main(["prepare-data", str(root), "--cache", str(cache), "--workers", "1"]) == 0
    assert "%|" in capfd.readouterr().err  # the bars are there without --no-progress


def test_train_image_two_steps_on_every_bad_file(all_bad, tmp_path, capfd):
    root, cache, files = all_bad
    flags = tiny_train_flags(root, tmp_path / "run", cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train-image", *flags, "--steps", "2", "--batch-image", "8", "--batch-frame", "8"]) == 0
    for path, row in files.items():
        named = sum(f"skipping {path}: " in str(w.message) for w in caught)
        assert named == (row.reason is not None)  # once, by preparation: the loader never meets it
    assert (tmp_path / "run" / "last.pt").is_file()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "%|" not in err


def test_cli_stops_with_one_line_when_a_split_has_nothing_readable(base, tmp_path, capfd):
    root, cache, src = _copy_base(base, tmp_path)
    for video in (root / "target" / "test").rglob("*.mp4"):
        shutil.copy(src.image, video)  # every test video is a JPEG renamed .mp4
    with warnings.catch_warnings(record=True):
        assert main(["prepare-data", str(root), "--cache", str(cache), "--no-progress"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no readable target videos" in err and "'test'" in err
