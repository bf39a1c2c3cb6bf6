"""Parallel, incremental and resumable preparation (webda.data.prepare, .parallel, .cache)."""

import json
import shutil

import numpy as np
import pytest

import webda.data.shots as shots_module
from webda.cli import main
from webda.data.cache import DamagedCacheWarning, Journal, VectorStore
from webda.data.prepare import prepare


def _outcome(data, cache):
    """What a preparation produced, independent of where its cache lives."""
    keyframes = [(kf.path.relative_to(cache).as_posix(), kf.video, kf.label, kf.shot, kf.path.read_bytes())
                 for kf in data.keyframes.keyframes]
    kept = [i.path for i in data.web_images] + [v.path for v in data.web_videos]
    return keyframes, data.overlap_report, kept


def _prepare(root, cache, workers=1):
    return prepare(root, cache, workers=workers, show_progress=False)


def test_data_same_results_with_one_and_two_workers(tiny_dataset, tiny_prepared, tmp_path):
    one = _prepare(tiny_dataset, tmp_path / "one", workers=1)
    two_cache = tiny_prepared.keyframes.keyframes[0].path.parents[2]
    assert _outcome(one, tmp_path / "one") == _outcome(tiny_prepared, two_cache)  # tiny_prepared: 2 workers
    assert one.overlap_report["dropped"]  # the comparison covers real drops
    assert (tmp_path / "one" / "overlap_report.json").read_text() == (two_cache / "overlap_report.json").read_text()


def test_data_rerun_processes_only_added_and_replaced_files(tiny_dataset, mini_copy, tmp_path):
    root = mini_copy(tiny_dataset, tmp_path / "d")
    first = _prepare(root, tmp_path / "cache", workers=2)
    total = len(first.layout.fingerprints)
    assert first.layout.files_reused == 0 and first.keyframes.counts["reused"] == 0

    source = tiny_dataset / "web_videos" / "yellow_star"
    shutil.copy(sorted(source.iterdir())[2], root / "web_videos" / "yellow_star" / "added.mp4")
    shutil.copy(sorted((tiny_dataset / "web_images" / "yellow_star").iterdir())[5],
                root / "web_images" / "yellow_star" / "added.jpg")
    replaced = sorted((root / "web_videos" / "red_ball_left").iterdir())[0]
    replaced.write_bytes(sorted((tiny_dataset / "web_videos" / "red_ball_left").iterdir())[3].read_bytes())
    removed = sorted((root / "web_videos" / "magenta_triangle").iterdir())[0]
    removed_digest = first.layout.fingerprints[removed]
    removed.unlink()

    again = _prepare(root, tmp_path / "cache", workers=2)
    assert len(again.layout.fingerprints) == total + 1
    assert again.layout.files_reused == total + 1 - 3  # the added image and video, the replaced video
    videos = again.layout.web_videos + again.layout.target_videos()
    assert again.keyframes.counts == {"reused": len(videos) - 2, "extracted": 2, "damaged": 0}
    new_keyframes = len(again.keyframes.of(replaced)) + len(again.keyframes.of(root / "web_videos" / "yellow_star" / "added.mp4"))
    assert again.cache_counts["embeddings_computed"] == 1 + new_keyframes
    assert "reused from the cache" in again.summary()
    assert not list((tmp_path / "cache").rglob(f"{removed_digest}_s*.jpg"))  # removed video's keyframes deleted

    fresh = _prepare(root, tmp_path / "fresh")
    assert _outcome(again, tmp_path / "cache") == _outcome(fresh, tmp_path / "fresh")


def test_data_interrupted_preparation_resumes(tiny_dataset, mini_copy, tmp_path, monkeypatch):
    root = mini_copy(tiny_dataset, tmp_path / "d")
    calls = []
    extract = shots_module.extract_task

    def interrupted(task):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(task)
        return extract(task)

    monkeypatch.setattr(shots_module, "extract_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prepare(root, tmp_path / "cache")
    monkeypatch.undo()
    resumed = _prepare(root, tmp_path / "cache")
    assert resumed.keyframes.counts["reused"] == 3
    assert resumed.layout.files_reused == len(resumed.layout.fingerprints)


def test_data_damaged_cache_entries_are_rebuilt(tiny_dataset, mini_copy, tmp_path):
    root = mini_copy(tiny_dataset, tmp_path / "d")
    cache = tmp_path / "cache"
    first = _prepare(root, cache)
    expected = _outcome(first, cache)

    lines = (cache / "keyframes.jsonl").read_text().splitlines()
    entry = json.loads(lines[1])
    entry["record"]["shots"][0][1] += 1  # valid JSON, wrong content: the CRC no longer matches
    lines[1] = json.dumps(entry)
    (cache / "keyframes.jsonl").write_text("\n".join(lines) + "\n")
    videos = first.layout.web_videos + first.layout.target_videos()
    other = next(v for v in videos if first.layout.fingerprints[v.path] != entry["key"].split(":")[0])
    jpeg = first.keyframes.of(other.path)[0].path
    jpeg.write_bytes(jpeg.read_bytes()[:100])  # a truncated keyframe
    files = (cache / "files.jsonl").read_text().splitlines()
    (cache / "files.jsonl").write_text("\n".join(["{not json"] + files[1:]) + "\n")
    for shard in (cache / "embeddings").rglob("*.npz"):
        shard.write_bytes(shard.read_bytes()[:200])

    with pytest.warns(DamagedCacheWarning) as caught:
        again = _prepare(root, cache)
    assert sorted(str(w.message).split(":")[0] for w in caught) == [  # one line per damaged file
        f"cache index {cache / 'files.jsonl'}", f"cache index {cache / 'keyframes.jsonl'}",
        f"cache shard {cache / 'embeddings' / 'default' / '000000.npz'}"]
    assert again.keyframes.counts["extracted"] == 2 and again.keyframes.counts["damaged"] == 2
    assert again.layout.files_reused == len(again.layout.fingerprints) - 1
    assert again.cache_counts["embeddings_reused"] == 0
    assert _outcome(again, cache) == expected
    assert _prepare(root, cache).keyframes.counts == {"reused": len(videos), "extracted": 0, "damaged": 0}


def test_data_journal_drops_a_cut_line_and_compacts(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.put("a", {"x": 1})
    journal.put("b", [1, 2])
    journal.put("a", {"x": 2})
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"crc": 1, "key": "c", "rec')  # a crash in the middle of a write
    with pytest.warns(DamagedCacheWarning, match="1 damaged line"):
        again = Journal(tmp_path / "j.jsonl")
    assert again.records == {"a": {"x": 2}, "b": [1, 2]} and again.damaged == 1
    assert again.compact(["a"]) == ["b"]
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 1
    assert Journal(tmp_path / "j.jsonl").records == {"a": {"x": 2}}

    store = VectorStore(tmp_path / "v", shard_size=2)
    for key in "abc":
        store.put(key, np.full(3, ord(key), np.float32))
    store.flush()
    assert len(list((tmp_path / "v").glob("*.npz"))) == 2
    assert np.array_equal(VectorStore(tmp_path / "v").get("c"), np.full(3, ord("c"), np.float32))
    store.compact(["a"])
    assert list(VectorStore(tmp_path / "v").vectors) == ["a"]


def test_data_prepare_data_cli_workers(tiny_dataset, mini_copy, tmp_path, capsys):
    root = mini_copy(tiny_dataset, tmp_path / "d")
    (root / "web_images" / "yellow_star" / "notes.txt").write_text("a crawler's log\n")
    assert main(["prepare-data", str(root), "--workers", "2", "--cache", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "ignored: 1 .txt" in out and "0 videos reused from the cache" in out
    assert main(["prepare-data", str(root), "--workers", "1", "--cache", str(tmp_path / "c")]) == 0
    assert "0 extracted" in capsys.readouterr().out
    assert main(["prepare-data", str(root), "--workers", "0"]) == 2
    assert "workers must be an integer >= 1" in capsys.readouterr().err
    assert main(["prepare-data", str(root), "--image-side", "0"]) == 2
    assert "image_side must be >= 1" in capsys.readouterr().err
