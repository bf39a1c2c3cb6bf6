"""Decoding throughput of webda.data (frames/s): PyAV video decoding, chunk loading, image loading.

Runs on the generated ``tiny`` dataset (written once into a temp folder). Each benchmark stores
``frames_per_s`` (median) in its extra_info.
"""

import pytest
import torch
from torch.utils.data import DataLoader

from webda.data.clips import ChunkSpec
from webda.data.datasets import ClipDataset, ImageDataset
from webda.data.layout import discover
from webda.data.synthetic import generate
from webda.data.transforms import EvalTransform, TrainTransform
from webda.data.video import read_frames


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_data") / "tiny"
    generate(root, "tiny", seed=0, show_progress=False)
    return discover(root)


def _run(benchmark, fn, frames: int, group: str, provider: str):
    benchmark.group = group
    benchmark.extra_info.update(provider=provider, frames_per_call=frames)
    benchmark(fn)
    benchmark.extra_info["frames_per_s"] = frames / benchmark.stats.stats.median


def test_bench_data_decode_video(benchmark, layout):
    video = layout.target_videos("test")[0]
    n = video.info.num_frames
    _run(benchmark, lambda: read_frames(video.path), n, f"decode {n} frames 64x64 H.264", "pyav")


def test_bench_data_decode_video_resized(benchmark, layout):
    video = layout.web_videos[0]
    n = video.info.num_frames
    _run(benchmark, lambda: read_frames(video.path, short_side=64), n,
         f"decode {n} frames 48x48 H.264 resized to 64", "pyav+swscale")


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_bench_data_clip_sample(benchmark, layout, train):
    transform = TrainTransform(56, flip=False) if train else EvalTransform(56)
    dataset = ClipDataset(layout.target_videos("test"), transform, ChunkSpec(24, 2), train=train)
    _run(benchmark, lambda: dataset[0], 12, "one 12-frame chunk -> (3, 12, 56, 56)", "train" if train else "eval")


def test_bench_data_clip_loader(benchmark, layout):
    dataset = ClipDataset(layout.target_videos(), EvalTransform(56), ChunkSpec(24, 2), train=False)
    loader = DataLoader(dataset, batch_size=10, num_workers=2, persistent_workers=True)

    def epoch():
        for clips, _, _ in loader:
            torch.sum(clips)

    _run(benchmark, epoch, 12 * len(dataset), f"DataLoader epoch of {len(dataset)} chunks, 2 workers", "pyav")


def test_bench_data_images(benchmark, layout):
    dataset = ImageDataset(layout.web_images[:32], TrainTransform(56))

    def load():
        for i in range(len(dataset)):
            dataset[i]

    _run(benchmark, load, len(dataset), "32 web images -> (3, 56, 56)", "pillow")
