"""The report's building blocks on small inputs: document writers, attention and overlap
summaries against the dataset card, the domain-mixing measure, the training-curve reader."""

import json

import pytest
import torch

from webda.report.attention_grid import weights_by_noise
from webda.report.curves import plot_training_curves, read_metrics
from webda.report.document import Document, Figure, Heading, Paragraph, Table
from webda.report.ground_truth import GroundTruth
from webda.report.overlap import overlap_summary
from webda.report.tsne import domain_agreement, subsample


def test_document_markdown_and_html(tmp_path):
    doc = Document("t").add(Heading("Results"), Paragraph("a **bold** `code` <tag>"),
                            Table(["x", "y"], [[1, "**2**"]]), Figure("f.png", "a figure"))
    md = doc.write(tmp_path).read_text()
    assert "## Results" in md and "| x | y |" in md and "|---|---|" in md and "![a figure](f.png)" in md
    html = (tmp_path / "index.html").read_text()
    assert "<b>bold</b>" in html and "<code>code</code>" in html and "&lt;tag&gt;" in html
    assert '<img src="f.png"' in html and "<td><b>2</b></td>" in html


def test_weights_by_noise_pools_every_noise_kind():
    stats = weights_by_noise([2.0, 1.0, 0.5, 0.25], ["clean", "clean", "irrelevant", "mislabeled"])
    assert stats["clean"] == {"items": 2, "mean_weight": 1.5}
    assert stats["noisy"] == {"items": 2, "mean_weight": 0.375}
    assert stats["irrelevant"]["mean_weight"] == 0.5


def test_domain_agreement_separated_vs_mixed():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 10
    domains = [d for d in "abc" for _ in range(30)]
    separated = torch.cat([c + torch.randn(30, 16, generator=g) for c in centres])
    mixed = torch.randn(90, 16, generator=g)
    assert domain_agreement(separated, domains) > 0.95
    assert domain_agreement(mixed, domains) < 0.5


def test_subsample_keeps_order_and_caps():
    out = subsample({"a": list(range(10)), "b": [1, 2]}, 4, seed=1)
    assert len(out["a"]) == 4 and out["a"] == sorted(out["a"]) and out["b"] == [1, 2]


def test_ground_truth_by_path_and_frame(tiny_dataset, tiny_card):
    truth = GroundTruth(tiny_dataset)
    spliced = next(i for i in tiny_card["items"] if i["noise"] == "spliced")
    assert truth.noise(tiny_dataset / spliced["path"]) == "spliced"
    assert truth.noise(spliced["path"]) == "spliced"
    for shot in spliced["shots"]:
        expected = "clean" if shot["relevant"] else "irrelevant"
        assert truth.frame_noise(spliced["path"], shot["start"]) == expected
    with pytest.raises(KeyError, match="not in the dataset card"):
        truth.entry("web_images/nothing.jpg")


def test_overlap_summary_counts_planted_duplicates(tiny_dataset, tiny_card, tiny_prepared):
    summary = overlap_summary(tiny_prepared.overlap_report, GroundTruth(tiny_dataset))
    planted = [i for i in tiny_card["items"] if i["noise"] == "duplicate" and i["domain"] == "web_image"]
    images = summary["web_image"]
    assert images["duplicates"] == len(planted)
    assert images["dropped"] == images["duplicates_dropped"] + images["others_dropped"]
    assert images["dropped"] == sum(r["kind"] == "web_image" for r in tiny_prepared.overlap_report["dropped"])
    assert images["duplicates_dropped"] >= 0.9 * images["duplicates"]


def test_training_curves_from_metrics(tmp_path):
    records = [{"kind": "setup", "step": 0},
               *({"kind": "train", "step": s, "loss": 2.0 / s, "ce/image": 1.0 / s, "acc/image": 0.1 * s,
                  "domain_acc/target_vs_image": 0.6} for s in (1, 2, 3)),
               {"kind": "eval", "step": 3, "top1": 0.5, "per_class": {"a": 0.5}}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_metrics(path) == records
    assert plot_training_curves(records, "t", tmp_path / "c.png").stat().st_size > 10_000


def test_recorded_ablation_blocks_show_the_recorded_table(tmp_path):
    from webda.ablate import TITLE
    from webda.report.recorded_ablation import RECORDED, recorded_ablation_blocks

    missing = Document("t").add(*recorded_ablation_blocks(tmp_path / "none.json")).markdown()
    assert f"## {TITLE}" in missing and "No recorded ablation" in missing
    assert RECORDED.is_file(), "the recorded ablation (benchmarks/results/ablation/ablation.json) is committed"
    summary = json.loads(RECORDED.read_text())
    md = Document("t").add(*recorded_ablation_blocks(RECORDED)).markdown()
    assert "**synthetic**" in md and "UCF-101" in md and summary["commit"] in md
    for row in summary["rows"]:
        mean = "–" if row["mean"] is None else f"{row['mean']:.1f}"
        assert f"| {row['name']} | {row['arch']} | {row['settings']} | {mean} |" in md
        assert f"{row['paper']:.1f} |" in md
