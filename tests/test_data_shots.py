"""Shot detection and the keyframe cache (webda.data.shots) against the generated card."""

from dataclasses import replace

import numpy as np
from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode

import webda.data.shots as shots_module
from webda.data.images import load_image
from webda.data.layout import discover
from webda.data.shots import INDEX_NAME, Shot, ShotSettings, detect_shots, extract_keyframes, shots_and_keyframes
from webda.data.video import iter_frames, probe_video, read_frames


def _found(true_cuts, detected, tolerance=1):
    hits = [b for b in true_cuts if any(abs(b - d) <= tolerance for d in detected)]
    false = [d for d in detected if not any(abs(b - d) <= tolerance for b in true_cuts)]
    return len(hits), len(false)


def test_data_shot_detection_finds_spliced_boundaries(tiny_dataset, tiny_card):
    true_total = hits = false = 0
    for item in tiny_card["items"]:
        if item["domain"] not in ("web_video", "target_test"):
            continue
        shots = detect_shots(tiny_dataset / item["path"])
        assert shots[0].start == 0 and shots[-1].end == item["num_frames"]
        assert all(a.end == b.start for a, b in zip(shots, shots[1:]))
        h, f = _found(item.get("boundaries", []), [s.start for s in shots[1:]])
        true_total, hits, false = true_total + len(item.get("boundaries", [])), hits + h, false + f
    assert true_total >= 8  # the card really plants splices
    assert hits >= 0.9 * true_total
    assert false <= max(1, 0.1 * true_total)


def test_data_keyframes_cached_once_and_reused(tiny_dataset, tmp_path):
    videos = discover(tiny_dataset).web_videos[:4]
    index = extract_keyframes(videos, tmp_path, show_progress=False, workers=2)
    assert index.counts == {"reused": 0, "extracted": 4, "damaged": 0}
    for video in videos:
        keyframes = index.of(video.path)
        assert keyframes and [k.shot for k in keyframes] == detect_shots(video.path)
        for kf in keyframes:
            assert kf.label == video.label and kf.shot.start <= kf.shot.keyframe < kf.shot.end
            assert load_image(kf.path).shape == (video.info.height, video.info.width, 3)
    assert len((tmp_path / INDEX_NAME).read_text().splitlines()) == 4

    again = extract_keyframes(videos, tmp_path, show_progress=False, workers=1)
    assert again.counts == {"reused": 4, "extracted": 0, "damaged": 0}
    assert [k.path for k in again.keyframes] == [k.path for k in index.keyframes]
    changed = extract_keyframes(videos[:1], tmp_path, min_shot_len=8, show_progress=False)  # new settings: redo
    assert changed.counts["extracted"] == 1 and changed.of(videos[0].path)
    assert sorted((tmp_path / "keyframes").rglob("*.jpg")) == sorted(k.path for k in changed.keyframes)


def _reference_shots(path, short_side, threshold=27.0, min_shot_len=15):
    """detect_shots as first written: RGB frames reversed to BGR for the detector."""
    detector = ContentDetector(threshold=threshold, min_scene_len=min_shot_len)
    cuts, n = [], 0
    for index, frame in enumerate(iter_frames(path, short_side)):
        cuts += detector.process_frame(FrameTimecode(index, fps=25.0), frame[:, :, ::-1].copy())
        n = index + 1
    cuts += detector.post_process(FrameTimecode(n - 1, fps=25.0))
    bounds = [0] + sorted({c.frame_num for c in cuts if 0 < c.frame_num < n}) + [n]
    return [Shot(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def test_data_one_pass_keyframes_match_two_passes(tiny_dataset, tiny_card, monkeypatch):
    spliced = [i for i in tiny_card["items"] if i["noise"] == "spliced"][:3]
    assert spliced
    settings = ShotSettings(detect_side=32)
    for item in spliced:
        path = tiny_dataset / item["path"]
        info = probe_video(path)
        shots, keyframes = shots_and_keyframes(path, info, settings)
        assert len(shots) >= 2 and shots == _reference_shots(path, 32)
        assert np.array_equal(keyframes, read_frames(path, [s.keyframe for s in shots]))
        monkeypatch.setattr(shots_module, "RETAINED_BYTES", 0)  # too long to keep: a second pass
        again_shots, again = shots_and_keyframes(path, info, replace(settings, keyframe_side=24))
        monkeypatch.undo()
        assert again_shots == shots and again.shape[1:] == (24, 24, 3)
        assert np.array_equal(again, read_frames(path, [s.keyframe for s in shots], short_side=24))
