"""Decoding, chunk sampling, transforms and datasets (webda.data.video/clips/transforms/datasets)."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from webda.data.clips import ChunkSpec
from webda.data.datasets import ClipDataset
from webda.data.layout import discover
from webda.data.scenes import class_catalogue, render_clip, target_background, trajectory
from webda.data.synthetic import _rng
from webda.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform
from webda.data.video import probe_video, read_frames, write_mp4


def test_data_decode_generated_mp4(tiny_dataset, tiny_card):
    item = next(i for i in tiny_card["items"] if i["domain"] == "target_test")
    path = tiny_dataset / item["path"]
    frames = read_frames(path)
    assert frames.dtype == np.uint8 and frames.shape == (item["num_frames"], 64, 64, 3)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (item["num_frames"], 64, 64, 24.0)
    picked = read_frames(path, [7, 3, 7, 0])
    assert np.array_equal(picked, frames[[7, 3, 7, 0]])
    assert read_frames(path, [0], short_side=32).shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="ended before frame"):
        read_frames(path, [item["num_frames"]])


def test_data_decoded_pixels_match_what_was_encoded(tmp_path):
    spec = class_catalogue(4)[0]
    rng = _rng(0, "target_test", 0, 0)
    clip = render_clip(spec, trajectory(spec, 20, rng), target_background(64, rng))
    write_mp4(clip, tmp_path / "c.mp4", crf=18)
    decoded = read_frames(tmp_path / "c.mp4").astype(int)
    assert decoded.shape == clip.shape
    assert np.abs(decoded - clip).mean() < 4  # lossy but close, and in RGB order
    red = spec.colour
    assert np.abs(decoded[0].reshape(-1, 3) - red).sum(1).min() < 40


def test_data_write_mp4_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_mp4(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "x.mp4")


def test_data_chunk_indices():
    spec = ChunkSpec(24, 2)
    assert spec.num_frames == 12
    assert spec.indices(5, 100).tolist() == list(range(5, 29, 2))
    assert spec.indices(0, 10).tolist() == [i % 10 for i in range(0, 24, 2)]  # looped
    assert ChunkSpec(5, 2).num_frames == 3
    gen = torch.Generator().manual_seed(0)
    starts = {spec.random_start(30, gen) for _ in range(300)}
    assert starts == set(range(7))
    assert spec.random_start(10, gen) == 0
    starts = spec.eval_starts(100)
    assert starts[0] == 0 and starts[-1] == 76 and len(starts) == 5
    assert spec.eval_starts(100, 2) == [0, 76]
    assert spec.eval_starts(20) == [0]
    with pytest.raises(ValueError, match="stride"):
        ChunkSpec(24, 0)


def test_data_transforms_shapes_and_values():
    clip = np.random.default_rng(0).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)
    out = TrainTransform(32)(clip, torch.Generator().manual_seed(0))
    assert out.shape == (3, 12, 32, 32) and out.dtype == torch.float32
    same = np.repeat(clip[:1], 12, axis=0)
    out = TrainTransform(32)(same, torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], out[:, 11])  # one crop for every frame

    grey = np.full((40, 60, 3), 128, np.uint8)
    out = EvalTransform(32)(grey)
    assert out.shape == (3, 32, 32)
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 5, 5], expected, atol=1e-5)

    half = np.zeros((64, 64, 3), np.uint8)
    half[:, 32:] = 255  # white right half
    plain = EvalTransform(64, resize=64, mean=(0, 0, 0), std=(1, 1, 1))(half)
    assert plain[:, :, :32].max() == 0 and plain[:, :, 32:].min() == 1
    flips = [TrainTransform(64, scale=(1, 1), ratio=(1, 1), mean=(0, 0, 0), std=(1, 1, 1))(half, torch.Generator().manual_seed(s))
             for s in range(20)]
    assert {bool(f[0, 0, 0] == 1) for f in flips} == {True, False}  # flipped sometimes
    no_flip = TrainTransform(64, scale=(1, 1), ratio=(1, 1), flip=False, mean=(0, 0, 0), std=(1, 1, 1))
    assert all(no_flip(half, torch.Generator().manual_seed(s))[0, 0, 0] == 0 for s in range(20))
    with pytest.raises(ValueError, match="frames must be uint8"):
        EvalTransform(32)(np.zeros((8, 8), np.uint8))


def test_data_clip_dataset_with_workers(tiny_dataset):
    videos = discover(tiny_dataset).target_videos("test")
    spec = ChunkSpec(24, 2)
    evaluation = ClipDataset(videos, EvalTransform(48), spec, train=False)
    assert len(evaluation) == sum(len(spec.eval_starts(v.info.num_frames)) for v in videos)
    batches = list(DataLoader(evaluation, batch_size=8, num_workers=2))
    clips = torch.cat([b[0] for b in batches])
    video_index = torch.cat([b[2] for b in batches])
    assert clips.shape == (len(evaluation), 3, 12, 48, 48)
    assert video_index.tolist() == [v for v, _ in evaluation.samples]
    assert torch.cat([b[1] for b in batches]).tolist() == [videos[v].label for v in video_index]

    training = ClipDataset(videos, TrainTransform(40, flip=False), spec, train=True)
    clip, label, index = training[3]
    assert clip.shape == (3, 12, 40, 40) and label == videos[3].label and index == 3


def test_data_train_chunks_stay_inside_one_shot(tiny_prepared, tiny_card):
    spliced = {i["path"] for i in tiny_card["items"] if i["noise"] == "spliced"}
    videos = [v for v in tiny_prepared.web_videos
              if v.path.relative_to(tiny_prepared.layout.root).as_posix() in spliced]
    dataset = ClipDataset(videos, TrainTransform(32, flip=False), ChunkSpec(24, 2), shots=tiny_prepared.keyframes)
    torch.manual_seed(0)
    for video in videos:
        shots = tiny_prepared.keyframes.shots(video.path)
        assert len(shots) >= 2
        seen = set()
        for _ in range(40):
            indices = dataset.random_chunk(video)
            inside = [s for s in shots if s.start <= indices.min() and indices.max() < s.end]
            assert len(inside) == 1 and len(indices) == 12
            seen.add(inside[0])
        assert len(seen) >= 2  # every shot can be drawn
    clip, label, index = dataset[0]
    assert clip.shape == (3, 12, 32, 32) and label == videos[0].label


def test_data_train_transform_crops_before_converting():
    clip = np.random.default_rng(1).integers(0, 256, (3, 37, 53, 3), dtype=np.uint8)
    transform = TrainTransform(24, flip=False)
    top, left, h, w = transform.crop_box(37, 53, torch.Generator().manual_seed(5))
    x = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255  # the whole clip converted first
    x = torch.nn.functional.interpolate(x[..., top:top + h, left:left + w], size=(24, 24), mode="bilinear",
                                        antialias=True, align_corners=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = ((x - mean) / std).permute(1, 0, 2, 3)
    assert torch.equal(transform(clip, torch.Generator().manual_seed(5)), expected)
    assert transform.source_side == 47 and EvalTransform(224).source_side == 256
