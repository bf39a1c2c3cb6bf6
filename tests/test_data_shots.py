"""Shot detection and the keyframe cache (webda.data.shots) against the generated card."""

import json

from webda.data.images import load_image
from webda.data.layout import discover
from webda.data.shots import INDEX_NAME, detect_shots, extract_keyframes


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


def test_data_keyframes_cached_once_and_reused(tiny_dataset, tmp_path, monkeypatch):
    videos = discover(tiny_dataset).web_videos[:4]
    index = extract_keyframes(videos, tmp_path, show_progress=False)
    for video in videos:
        keyframes = index.of(video.path)
        assert keyframes and [k.shot for k in keyframes] == detect_shots(video.path)
        for kf in keyframes:
            assert kf.label == video.label and kf.shot.start <= kf.shot.keyframe < kf.shot.end
            assert load_image(kf.path).shape == (video.info.height, video.info.width, 3)
    cached = json.loads((tmp_path / INDEX_NAME).read_text())
    assert len(cached["videos"]) == 4

    import webda.data.shots as shots_module

    def fail(*args, **kwargs):
        raise AssertionError("cached videos must not be decoded again")

    monkeypatch.setattr(shots_module, "detect_shots", fail)
    again = extract_keyframes(videos, tmp_path, show_progress=False)
    assert [k.path for k in again.keyframes] == [k.path for k in index.keyframes]
    monkeypatch.undo()
    changed = extract_keyframes(videos[:1], tmp_path, min_shot_len=8, show_progress=False)  # new settings: redo
    assert json.loads((tmp_path / INDEX_NAME).read_text())["params"]["min_shot_len"] == 8
    assert changed.of(videos[0].path)
