"""Folder-layout discovery, clear errors, and skipping of unreadable files (webda.data.layout)."""

import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from webda.data.datasets import ImageDataset
from webda.data.layout import UNLABELED, discover
from webda.data.shots import extract_keyframes
from webda.data.skips import CorruptFileWarning
from webda.data.transforms import EvalTransform
from webda.errors import UserError


def test_data_discover_matches_card(tiny_dataset, tiny_card):
    layout = discover(tiny_dataset)
    assert list(layout.classes) == (tiny_dataset / "classes.txt").read_text().split()
    by_domain = Counter(item["domain"] for item in tiny_card["items"])
    assert len(layout.web_images) == by_domain["web_image"]
    assert len(layout.web_videos) == by_domain["web_video"]
    assert len(layout.target_videos("train")) == by_domain["target_train"]
    assert len(layout.target_videos("test")) == by_domain["target_test"]
    assert len(layout.skips) == 0
    labels = {item["path"]: item["label"] for item in tiny_card["items"]}
    for item in layout.web_images + layout.web_videos + layout.target_videos():
        assert layout.classes[item.label] == labels[item.path.relative_to(tiny_dataset).as_posix()]
    frames = {item["path"]: item["num_frames"] for item in tiny_card["items"] if "num_frames" in item}
    for video in layout.web_videos + layout.target_videos():
        assert video.info.num_frames == frames[video.path.relative_to(tiny_dataset).as_posix()]


def test_data_unlabeled_target_and_classes_from_folders(tiny_dataset, tmp_path, mini_copy):
    root = mini_copy(tiny_dataset, tmp_path / "d")
    (root / "classes.txt").unlink()
    loose = [f.read_bytes() for f in sorted((root / "target").rglob("*.mp4"))]
    shutil.rmtree(root / "target")
    (root / "target").mkdir()
    for i, data in enumerate(loose):
        (root / "target" / f"clip_{i}.mp4").write_bytes(data)
    layout = discover(root)
    assert list(layout.classes) == sorted(d.name for d in (root / "web_images").iterdir())
    assert list(layout.target) == ["train"]
    assert len(layout.target["train"]) == len(loose)
    assert all(v.label == UNLABELED for v in layout.target["train"])


def test_data_missing_folder_and_empty_class_name_the_path(tiny_dataset, tmp_path, mini_copy):
    with pytest.raises(UserError, match="nowhere"):
        discover(tmp_path / "nowhere")
    root = mini_copy(tiny_dataset, tmp_path / "d")
    shutil.rmtree(root / "web_videos")
    with pytest.raises(UserError, match="web_videos"):
        discover(root)
    root = mini_copy(tiny_dataset, tmp_path / "e")
    empty = root / "web_images" / "yellow_star"
    shutil.rmtree(empty)
    empty.mkdir()
    with pytest.raises(UserError, match="yellow_star"):
        discover(root)
    root = mini_copy(tiny_dataset, tmp_path / "f")
    (root / "web_images" / "not_a_class").mkdir()
    with pytest.raises(UserError, match="not_a_class"):
        discover(root)


def test_data_corrupt_files_are_skipped_and_counted(tiny_dataset, tmp_path, mini_copy):
    root = mini_copy(tiny_dataset, tmp_path / "d")
    video = next((root / "web_videos" / "red_ball_left").iterdir())
    data = video.read_bytes()
    (video.parent / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "target" / "test" / "red_ball_left" / "text.mp4").write_text("this is not a video\n")
    (root / "web_images" / "yellow_star" / "empty.jpg").write_bytes(b"")
    (root / "web_images" / "yellow_star" / "text.png").write_text("not an image either\n")
    with pytest.warns(CorruptFileWarning) as record:
        layout = discover(root)
    bad = {"truncated.mp4", "text.mp4", "empty.jpg", "text.png"}
    assert {p.name for p, _ in layout.skips.skipped} == bad
    assert len([w for w in record if issubclass(w.category, CorruptFileWarning)]) == len(bad)
    assert "4 unreadable files skipped" in layout.skips.summary()
    assert not any(item.path.name in bad for item in layout.web_images + layout.web_videos + layout.target_videos())


def test_data_truncated_jpeg_skipped_while_loading(tiny_dataset, tmp_path):
    images = sorted((tiny_dataset / "web_images" / "yellow_star").iterdir())[:3]
    good = [shutil.copy(f, tmp_path / f.name) for f in images]
    data = (tmp_path / images[0].name).read_bytes()
    (tmp_path / images[0].name).write_bytes(data[: len(data) // 3])  # header intact, pixels cut
    from webda.data.layout import Item

    dataset = ImageDataset([Item(tmp_path / images[0].name, 2)] + [Item(g, 2) for g in good[1:]], EvalTransform(32))
    with pytest.warns(CorruptFileWarning, match=images[0].name):
        image, label, index = dataset[0]
    assert index == 1 and label == 2 and image.shape == (3, 32, 32) and torch.isfinite(image).all()
    assert len(dataset.skips) == 1


def test_data_keyframe_extraction_skips_undecodable_video(tiny_dataset, tmp_path):
    layout = discover(tiny_dataset)
    good = layout.target_videos("test")[0]
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    from dataclasses import replace

    gone = tmp_path / "deleted_since.mp4"
    with pytest.warns(CorruptFileWarning) as record:
        index = extract_keyframes([good, replace(good, path=fake), replace(good, path=gone)], tmp_path / "cache",
                                  show_progress=False)
    assert {p.name for p, _ in index.skips.skipped} == {"fake.mp4", "deleted_since.mp4"}
    assert len(record) == 2 and all("skipping" in str(w.message) for w in record)
    assert index.of(fake) == [] and len(index.of(good.path)) >= 1
    assert np.isfinite(len(index.keyframes))
