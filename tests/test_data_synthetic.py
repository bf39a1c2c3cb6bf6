"""The generated dataset (webda.data.synthetic): card, determinism, and that motion pairs need motion."""

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from webda.data.scenes import class_catalogue, render_clip, target_background, trajectory
from webda.data.synthetic import CARD_NAME, DATASET_PRESETS, generate, item_rng


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_same_seed_writes_identical_bytes(tiny_dataset, tmp_path):
    generate(tmp_path / "again", "tiny", seed=0, show_progress=False)
    assert _digests(tmp_path / "again") == _digests(tiny_dataset)
    other = generate(tmp_path / "other", "tiny", seed=1, num_classes=2, show_progress=False)
    assert len(other["classes"]) == 2
    theirs, ours = _digests(tmp_path / "other"), _digests(tiny_dataset)
    shared = [p for p in theirs if p in ours and p.endswith((".mp4", ".jpg"))]
    assert shared and all(theirs[p] != ours[p] for p in shared)


def test_data_generate_refuses_non_empty_folder(tiny_dataset):
    with pytest.raises(ValueError, match="not empty"):
        generate(tiny_dataset, "tiny")


def test_data_card_matches_files_and_preset(tiny_dataset, tiny_card):
    preset = DATASET_PRESETS["tiny"]
    files = {p for p in _digests(tiny_dataset) if p not in (CARD_NAME, "classes.txt")}
    assert files == {item["path"] for item in tiny_card["items"]}
    classes = tiny_card["classes"]
    names = [c["name"] for c in classes]
    assert (tiny_dataset / "classes.txt").read_text().split() == names
    paired = [c for c in classes if c["pair"]]
    assert 2 * len(paired) >= len(classes)
    for c in paired:
        partner = classes[names.index(c["pair"])]
        assert partner["pair"] == c["name"] and (partner["shape"], partner["colour"]) == (c["shape"], c["colour"])

    for name in names:
        images = [i for i in tiny_card["items"] if i["domain"] == "web_image" and i["label"] == name]
        noise = Counter(i["noise"] for i in images)
        assert noise["irrelevant"] == round(preset.irrelevant_rate * preset.web_images)
        assert noise["mislabeled"] == round(preset.mislabeled_rate * preset.web_images)
        assert noise["duplicate"] == preset.duplicates
        partner = classes[names.index(name)]["pair"]
        for i in images:
            assert (i["true_class"] is None) == (i["noise"] == "irrelevant")
            assert (i["true_class"] != name) == (i["noise"] in ("irrelevant", "mislabeled"))
            assert i["noise"] != "mislabeled" or i["true_class"] != partner  # visibly another class
    videos = [i for i in tiny_card["items"] if i["domain"] == "web_video"]
    assert sum(i["noise"] == "duplicate" for i in videos) == preset.reuploads
    assert sum(i["noise"] == "spliced" for i in videos) == len(names) * round(preset.splice_rate * preset.web_videos)
    for v in videos:
        assert v["shots"][0]["start"] == 0 and v["shots"][-1]["end"] == v["num_frames"]
        assert v["boundaries"] == [s["start"] for s in v["shots"][1:]]
        assert (v["noise"] == "spliced") <= any(not s["relevant"] for s in v["shots"])


def _linear_accuracy(train_x, train_y, test_x, test_y, ridge=1.0):
    """Test accuracy of a ridge-regression classifier (targets -1/+1) on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    design = torch.cat([train_x, torch.ones(len(train_x), 1)], 1).double()
    gram = design.T @ design + ridge * torch.eye(design.shape[1], dtype=torch.double)
    w = torch.linalg.solve(gram, design.T @ (2 * train_y.double() - 1))
    scores = torch.cat([test_x, torch.ones(len(test_x), 1)], 1).double() @ w
    return ((scores > 0).float() == test_y).float().mean().item()


def _rendered_pair(pair, split, count, num_frames=24, seed=0):
    """``count`` target-style clips per class of a motion pair, drawn exactly as the generator draws
    target videos (same per-item generators), rendered without encoding: [(frames float, label)]."""
    return [
        (render_clip(spec, trajectory(spec, num_frames, rng), target_background(64, rng)).astype(np.float32) / 255, float(k))
        for k, (c, spec) in enumerate(pair)
        for i in range(count)
        for rng in [item_rng(seed, f"target_{split}", class_catalogue(10), c, i)]
    ]


def _frame_features(videos):
    x = torch.cat([F.avg_pool2d(torch.from_numpy(f).permute(0, 3, 1, 2), 8).flatten(1) for f, _ in videos])  # 8x8 RGB
    y = torch.cat([torch.full((len(f),), label) for f, label in videos])
    return x, y


def _horizontal_flow(frames):
    """Mean horizontal optical flow of a clip from brightness constancy: -sum(I_t I_x) / sum(I_x^2)."""
    grey = frames.mean(-1)
    it = grey[2:] - grey[:-2]
    ix = np.gradient(grey[1:-1], axis=2)
    return -(it * ix).sum() / (ix * ix).sum()


def test_data_motion_partners_share_all_but_the_direction():
    """Item i of a motion-pair class and item i of its partner draw the same background, pose and
    web look: the left/right and cw/ccw pairs of the small preset start from the same frame."""
    classes = class_catalogue(6)
    for c, spec in enumerate(classes):
        if not spec.pair or spec.name > spec.pair:
            continue
        partner = next(k for k, s in enumerate(classes) if s.name == spec.pair)
        clips = [render_clip(classes[k], trajectory(classes[k], 8, rng), target_background(32, rng))
                 for k in (c, partner) for rng in [item_rng(0, "target_train", classes, k, 3)]]
        assert np.array_equal(clips[0][0], clips[1][0])
        assert not np.array_equal(clips[0][-1], clips[1][-1])


def test_data_motion_pairs_need_motion():
    """Per motion pair, a classifier of single frames is near chance (more clips than the tiny
    preset has, for a stable estimate); the same learner on a motion feature of 12-frame chunks
    separates left from right, so the check can fail."""
    classes = class_catalogue(10)
    pairs = [[(c, s) for c, s in enumerate(classes) if s.name in (spec.name, spec.pair)]
             for spec in classes if spec.pair and spec.name < spec.pair]
    assert len(pairs) == 3
    for pair in pairs:
        train, test = _rendered_pair(pair, "train", 30), _rendered_pair(pair, "test", 15)
        frame_acc = _linear_accuracy(*_frame_features(train), *_frame_features(test))
        assert 0.3 < frame_acc < 0.7, (pair[0][1].name, frame_acc)
        if pair[0][1].motion in ("left", "right"):
            flow = lambda videos: (torch.tensor([[_horizontal_flow(f)] for f, _ in videos]),  # noqa: E731
                                   torch.tensor([label for _, label in videos]))
            clip_acc = _linear_accuracy(*flow(train), *flow(test))
            assert clip_acc > 0.9, clip_acc


def test_generate_overrides_a_preset_field_and_keeps_each_video_s_own_frames(tmp_path):
    spliced = generate(tmp_path / "a", "tiny", 0, show_progress=False)
    plain = generate(tmp_path / "b", "tiny", 0, show_progress=False, splice_rate=0.0)
    assert plain["settings"]["splice_rate"] == 0.0
    kinds = {item["path"]: item["noise"] for item in spliced["items"] if item["domain"] == "web_video"}
    assert "spliced" in kinds.values()
    assert all(item["noise"] != "spliced" for item in plain["items"])
    for path, kind in kinds.items():  # an unspliced video is the same file, a spliced one its frames alone
        same = (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
        assert same == (kind != "spliced"), path
        if kind == "spliced":
            shots = next(i for i in spliced["items"] if i["path"] == path)["shots"]
            relevant = sum(s["end"] - s["start"] for s in shots if s["relevant"])
            assert next(i for i in plain["items"] if i["path"] == path)["num_frames"] == relevant
    with pytest.raises(TypeError):
        generate(tmp_path / "c", "tiny", 0, show_progress=False, splice_probability=0.0)
    for bad in (dict(splice_rate=-0.1), dict(irrelevant_rate=1.5), dict(irrelevant_rate=0.6, mislabeled_rate=0.6)):
        with pytest.raises(ValueError, match="rate"):
            generate(tmp_path / "d", "tiny", 0, show_progress=False, **bad)
    assert not (tmp_path / "d").exists()  # refused before anything is written
