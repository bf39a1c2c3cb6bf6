"""Every image and video format a crawl brings is read, sub-folders of class folders included, and
every other file is reported (webda.data.images, webda.data.video, webda.data.layout)."""

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from webda.data.datasets import ImageDataset
from webda.data.image_copies import copy_geometry
from webda.data.images import IMAGE_EXTENSIONS, load_image
from webda.data.overlap import default_embedding, default_transform
from webda.data.prepare import prepare
from webda.data.transforms import EvalTransform
from webda.data.video import VIDEO_EXTENSIONS, probe_video, read_frames

# file name -> (container, codec) written with PyAV; what crawls and benchmarks bring
VIDEOS = {
    "a.m4v": ("ipod", "libx264"), "b.mpg": ("mpeg", "mpeg1video"), "c.3gp": ("3gp", "mpeg4"),
    "d.flv": ("flv", "flv"), "e.ts": ("mpegts", "mpeg2video"), "f.wmv": ("asf", "wmv2"), "g.ogv": ("ogg", "libvpx"),
    "h.MPEG": ("mpeg", "mpeg2video"), "i.avi": ("avi", "mpeg4"), "j.webm": ("webm", "libvpx-vp9"),
    "k.mov": ("mov", "mjpeg"), "l.mkv": ("matroska", "libx264"),
}
IMAGES = {"a.webp": "WEBP", "b.bmp": "BMP", "c.gif": "GIF", "d.tif": "TIFF", "E.JPG": "JPEG", "f.tiff": "TIFF"}


def _pattern(rng, height=48, width=64):
    """A random smooth picture: never a near-duplicate of another."""
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def write_video(path: Path, container: str, codec: str, rng, frames: int = 20) -> None:
    picture = _pattern(rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.gop_size = 12  # a keyframe to seek to (x264 also puts B-frames between)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(picture, i, axis=1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_image(path: Path, fmt: str, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(_pattern(rng))
    if fmt == "GIF":  # animated: the first frame is the picture, the second plain blue
        picture.save(path, format="GIF", save_all=True, append_images=[Image.new("RGB", (64, 48), (0, 0, 255))])
    else:
        picture.save(path, format=fmt)


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    """A dataset root with every format, a query sub-folder, and files that are not media."""
    root = tmp_path_factory.mktemp("crawl")
    rng = np.random.default_rng(0)
    for name, fmt in IMAGES.items():
        write_image(root / "web_images" / "cat" / name, fmt, rng)
    write_image(root / "web_images" / "dog" / "query 1" / "a.png", "PNG", rng)  # a crawler's folder per query
    write_image(root / "web_images" / "dog" / "query 2" / "b.jpeg", "JPEG", rng)
    write_image(root / "web_images" / "dog" / ".thumbnails" / "a.jpg", "JPEG", rng)  # hidden: ignored
    for i, (name, (container, codec)) in enumerate(VIDEOS.items()):
        write_video(root / "web_videos" / ("cat" if i % 2 else "dog") / name, container, codec, rng)
    write_video(root / "target" / "train" / "t.avi", "avi", "mpeg4", rng)
    write_video(root / "target" / "train" / "u.3gp", "3gp", "mpeg4", rng)
    write_video(root / "target" / "test" / "cat" / "v.mp4", "mp4", "libx264", rng)
    write_video(root / "target" / "test" / "dog" / "w.mpg", "mpeg", "mpeg1video", rng)
    (root / "web_images" / "cat" / "notes.txt").write_text("not an image\n")
    (root / "web_images" / "cat" / "photo.heic").write_bytes(b"HEIC is not read by Pillow alone")
    (root / "web_images" / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / "web_images" / "README.md").write_text("outside any class folder\n")
    write_image(root / "web_videos" / "dog" / "poster.jpg", "JPEG", rng)  # an image among videos
    return root


def test_data_extensions_cover_crawl_formats():
    for ext in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"):
        assert ext in IMAGE_EXTENSIONS
    for ext in (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ts", ".wmv", ".ogv"):
        assert ext in VIDEO_EXTENSIONS
    assert not set(IMAGE_EXTENSIONS) & set(VIDEO_EXTENSIONS)
    assert ".heic" not in IMAGE_EXTENSIONS and ".txt" not in IMAGE_EXTENSIONS


def test_data_every_format_is_prepared_and_the_rest_reported(crawl, tmp_path):
    data = prepare(crawl, tmp_path / "cache", workers=1, show_progress=False)
    layout = data.layout
    images = {p.relative_to(crawl).as_posix() for p in (i.path for i in layout.web_images)}
    assert images == {f"web_images/cat/{n}" for n in IMAGES} | {"web_images/dog/query 1/a.png",
                                                                  "web_images/dog/query 2/b.jpeg"}
    assert {layout.classes[i.label] for i in layout.web_images if "query" in str(i.path)} == {"dog"}
    assert {v.path.name for v in layout.web_videos} == set(VIDEOS)
    assert {v.path.name for v in layout.target_videos()} == {"t.avi", "u.3gp", "v.mp4", "w.mpg"}
    assert len(layout.skips) == 0
    for video in layout.web_videos + layout.target_videos():
        assert video.info.num_frames == 20 and (video.info.width, video.info.height) == (64, 48)
        assert data.keyframes.of(video.path), video.path.name
    assert data.overlap_report["dropped"] == []
    assert len(data.web_images) == len(images) and len(data.web_videos) == len(VIDEOS)

    ignored = {p.relative_to(crawl).as_posix() for p in layout.skips.ignored}
    assert ignored == {"web_images/cat/notes.txt", "web_images/cat/photo.heic", "web_images/cat/.DS_Store",
                       "web_images/dog/.thumbnails", "web_images/README.md", "web_videos/dog/poster.jpg"}
    assert "ignored: 1 .heic, 1 .jpg, 1 .md, 1 .txt, 2 hidden" in layout.summary()
    assert "ignored: 1 .heic" in data.summary()


def test_data_gif_gives_its_first_frame_and_videos_decode(crawl):
    first = load_image(crawl / "web_images" / "cat" / "c.gif")
    assert first.shape == (48, 64, 3) and first[..., 2].mean() < 200 and first.std() > 10  # not the blue frame
    seekable = set()
    for name in VIDEOS:
        path = next(crawl.glob(f"web_videos/*/{name}"))
        info = probe_video(path)
        frames = read_frames(path)
        assert frames.shape == (info.num_frames, 48, 64, 3)
        for indices in ([19, 3], [12], [13, 19, 13], [14, 17]):  # from 12 on, decoding starts at the keyframe
            assert np.array_equal(read_frames(path, indices, info=info), frames[indices])
        if [i for i, _ in info.seek_points] == [12]:
            seekable.add(name)
    assert {"a.m4v", "i.avi", "l.mkv", "c.3gp", "f.wmv"} <= seekable


def _grey_levels(a, b):
    """Mean absolute difference of two normalised transform outputs, in 0-255 grey levels."""
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return float(((a - b).abs() * std * 255).mean())


def test_data_large_images_are_decoded_small_within_tolerance(tmp_path, tiny_dataset, mini_copy):
    rng = np.random.default_rng(1)
    picture = Image.fromarray(_pattern(rng, 150, 200)).resize((2000, 1500), Image.BICUBIC)
    noisy = np.clip(np.asarray(picture).astype(int) + rng.integers(-8, 9, (1500, 2000, 1)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "big.jpg", quality=90)
    full = load_image(tmp_path / "big.jpg")
    for size in (48, 224):
        transform = EvalTransform(size)
        draft = load_image(tmp_path / "big.jpg", transform.source_side)
        assert min(draft.shape[:2]) >= transform.source_side and draft.shape[0] < 1500 / 2
        assert _grey_levels(transform(draft), transform(full)) < 1.5
    embed = default_transform()
    cosine = (default_embedding(embed(full)[None]) * default_embedding(embed(
        load_image(tmp_path / "big.jpg", embed.source_side))[None])).sum()
    assert cosine > 0.999

    root = mini_copy(tiny_dataset, tmp_path / "d")
    Image.fromarray(noisy).save(root / "web_images" / "yellow_star" / "big.png")
    shutil.copy(tmp_path / "big.jpg", root / "web_images" / "yellow_star" / "big.jpg")
    data = prepare(root, tmp_path / "cache", workers=2, show_progress=False)
    copies = {p.name: c for p, c in data.image_sources.items()}
    assert set(copies) == {"big.png", "big.jpg"} and data.cache_counts["copies_made"] == 2
    copy = load_image(copies["big.png"])
    size, box = copy_geometry(2000, 1500, 512)
    assert copy.shape == (512, 680, 3) and size == (680, 512) and box[2] - box[0] == pytest.approx(680 * 1500 / 512)
    resized = np.asarray(Image.fromarray(noisy).resize(size, Image.BILINEAR, box=box))
    assert np.abs(resized.astype(int) - copy).mean() < 1.5  # the JPEG (and a draft decode for big.jpg)
    assert np.abs(load_image(copies["big.jpg"]).astype(int) - resized).mean() < 1.5
    dataset = ImageDataset(data.web_images, EvalTransform(224), sources=data.image_sources)
    index = next(i for i, item in enumerate(data.web_images) if item.path.name == "big.png")
    expected = EvalTransform(224)(load_image(copies["big.png"], EvalTransform(224).source_side))
    assert torch.equal(dataset[index][0], expected)  # the loader reads the copy (at half size: draft mode)
    again = prepare(root, tmp_path / "cache", workers=1, show_progress=False)
    assert again.cache_counts["copies_reused"] == 2 and again.image_sources == data.image_sources
