"""Overlap removal between web items and target keyframes (webda.data.overlap, webda.data.prepare)."""

import json
from pathlib import Path

import numpy as np
import torch

from webda.data.layout import Item
from webda.data.overlap import default_embedding, embed_images, remove_overlap


def test_data_overlap_removal_drops_planted_duplicates(tiny_dataset, tiny_card, tiny_prepared):
    report = tiny_prepared.overlap_report
    dropped = {Path(r["path"]).relative_to(tiny_dataset).as_posix() for r in report["dropped"]}
    web = [i for i in tiny_card["items"] if i["domain"] in ("web_image", "web_video")]
    duplicates = [i["path"] for i in web if i["noise"] == "duplicate"]
    clean = [i["path"] for i in web if i["noise"] != "duplicate"]
    assert len(duplicates) >= 10
    assert sum(p in dropped for p in duplicates) >= 0.9 * len(duplicates)
    assert sum(p in dropped for p in clean) < 0.05 * len(clean)

    kept = {i.path for i in tiny_prepared.web_images + tiny_prepared.web_videos}
    assert not kept & {tiny_dataset / p for p in dropped}
    assert len(kept) + len(dropped) == len(web)
    per_class = report["per_class"]
    assert sum(c["web_images_dropped"] + c["web_videos_dropped"] for c in per_class.values()) == len(dropped)
    for record in report["dropped"]:
        assert record["similarity"] > 0.9 and Path(record["matched_target_video"]).is_file()
    cache = Path(tiny_prepared.keyframes.keyframes[0].path).parents[2]
    assert json.loads((cache / "overlap_report.json").read_text()) == report


def test_data_prepared_items_hide_target_labels(tiny_prepared):
    assert all(i.label == -1 for i in tiny_prepared.target_frames("train"))
    assert all(v.label == -1 for v in tiny_prepared.target_clips("train"))
    assert all(v.label >= 0 for v in tiny_prepared.eval_videos("test"))
    assert all(i.label >= 0 for i in tiny_prepared.web_frames())


def test_data_default_embedding_is_unit_and_sees_content():
    rng = np.random.default_rng(0)
    patterns = torch.from_numpy(rng.random((4, 3, 8, 8), dtype=np.float32))
    images = torch.nn.functional.interpolate(patterns, size=64, mode="bilinear")  # smooth pictures
    emb = default_embedding(images)
    assert emb.shape == (4, 3 * 16 * 16 + 64)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    brighter = default_embedding((images * 1.03).clamp(0, 1))
    assert (emb * brighter).sum(1).min() > 0.95  # same pictures
    assert (emb[0] * emb[1:]).sum(-1).max() < 0.5  # different pictures


def test_data_overlap_uses_the_given_embedding(tiny_prepared):
    data = tiny_prepared
    constant = lambda images: torch.ones(len(images), 8)  # noqa: E731 - every item looks the same
    result = remove_overlap(data.web_images[:5], data.web_videos[:2], data.layout.target_videos(), data.keyframes,
                            data.classes, embed_fn=constant)
    assert result.web_images == [] and result.web_videos == []
    emb = embed_images([Item(k.path, 0) for k in data.keyframes.keyframes[:3]], embed_fn=constant)
    assert emb.shape == (3, 8) and torch.allclose(emb.norm(dim=1), torch.ones(3))
