"""``webda ablate``: the table, per-row spread and paired effects; a failed row is recorded and the rest run;
a rerun reuses every recorded row."""

import json
import math
from dataclasses import replace

import pytest

from webda import ablate
from webda.ablate import BEST_IMAGE, COMPARISONS, ROWS, Row, motion_partners, paired, pairs_merged_accuracy, summarise
from webda.cli import main


def _results(out):
    """ablation.json with its rows and comparisons keyed by name."""
    results = json.loads((out / "ablation.json").read_text())
    return {"rows": {r["name"]: r for r in results["rows"]},
            "comparisons": {c["name"]: c for c in results["comparisons"]}}


def _tables(out):
    """ablation.md without its last paragraph (the invocation's wall time)."""
    return (out / "ablation.md").read_text().split("Measured by commit")[0]


def _flags(out, steps="2"):
    return ["ablate", "--preset", "tiny", "--seeds", "1", "--out", str(out), "--image-steps", steps,
            "--video-steps", steps, "--no-progress"]


def test_ablate_writes_the_table_and_reuses_finished_runs(tmp_path):
    out = tmp_path / "ablate"
    assert main(_flags(out)) == 0
    table = (out / "ablation.md").read_text()
    results = _results(out)
    assert "s / seed" in table and "the invocation that wrote this table ran" in table
    for row in ROWS:
        assert f"| {row.name} |" in table
        assert f"{row.paper:.1f}" in table
        per_seed = results["rows"][row.name]["per_seed"]
        assert len(per_seed) == 1 and 0.0 <= per_seed[0] <= 100.0
        assert per_seed[0] <= results["rows"][row.name]["merged"]["mean"] <= 100.0
        assert results["rows"][row.name]["failed"] == {}
    for name, with_row, without_row in COMPARISONS:
        c = results["comparisons"][name]
        assert c["differences"] == pytest.approx([results["rows"][with_row]["per_seed"][0]
                                                  - results["rows"][without_row]["per_seed"][0]])
        assert f"| {name} | {with_row} | {without_row} |" in table
    assert "synthetic" in table and "UCF-101" in table and "commit" in table

    checkpoints = {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/last.pt")}
    assert len(checkpoints) == len(ROWS)
    assert main(_flags(out)) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/last.pt")} == checkpoints
    assert _tables(out) == table.split("Measured by commit")[0]


def test_a_diverging_row_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    huge = "a learning rate of 1e30 makes the loss diverge (this test)"
    rows = [
        Row("I", "image", dict(branches="I", attention=False, da=False), "S", 62.9, changes=dict(lr=1e30),
            reason=huge),
        next(r for r in ROWS if r.name == BEST_IMAGE),
        next(r for r in ROWS if r.name == "V"),
    ]
    monkeypatch.setattr(ablate, "ROWS", rows)
    monkeypatch.setattr(ablate, "COMPARISONS", [("video over image", "V", "I"), ("stage 2", "V", BEST_IMAGE)])
    out = tmp_path / "ablate"
    assert main(_flags(out, steps="3")) == 0
    assert "I: failed: training diverged" in capsys.readouterr().out
    results = _results(out)
    assert results["rows"]["I"]["per_seed"] == [None] and results["rows"]["I"]["mean"] is None
    assert results["rows"]["I"]["failed"]["0"].startswith("training diverged: the loss is")
    assert results["rows"]["V"]["failed"] == {} and results["rows"][BEST_IMAGE]["failed"] == {}
    assert results["comparisons"]["video over image"]["n"] == 0
    assert results["comparisons"]["stage 2"]["n"] == 1
    table = (out / "ablation.md").read_text()
    assert "| I | S | branches=I, attention=False, da=False, **lr=1e+30** | – | – | – | failed | – | – | 62.9 |" in table
    assert f"- I: {huge}" in table and "- I, seed 0: training diverged" in table

    # a rerun reuses the failure (same settings, same seed) instead of training the row again
    record = (out / "seed0" / "i" / "row.json").read_text()
    assert main(_flags(out, steps="3")) == 0
    assert (out / "seed0" / "i" / "row.json").read_text() == record
    assert _tables(out) == table.split("Measured by commit")[0]


def test_video_rows_of_a_failed_image_model_are_marked_failed(tmp_path, monkeypatch):
    best = next(r for r in ROWS if r.name == BEST_IMAGE)
    rows = [replace(best, changes=dict(lr=1e30), reason="diverges (this test)"),
            next(r for r in ROWS if r.name == "V"), next(r for r in ROWS if r.name == "V, from scratch")]
    monkeypatch.setattr(ablate, "ROWS", rows)
    monkeypatch.setattr(ablate, "COMPARISONS", [])
    out = tmp_path / "ablate"
    assert main(_flags(out, steps="3")) == 0
    results = _results(out)
    assert results["rows"]["V"]["failed"] == {"0": f"its image model ({BEST_IMAGE}, seed 0) failed"}
    assert results["rows"]["V, from scratch"]["failed"] == {}


def test_a_row_with_changed_settings_is_not_reused(tmp_path, monkeypatch):
    rows = [next(r for r in ROWS if r.name == "I")]
    monkeypatch.setattr(ablate, "ROWS", rows)
    monkeypatch.setattr(ablate, "COMPARISONS", [])
    out = tmp_path / "ablate"
    assert main(_flags(out)) == 0
    monkeypatch.setattr(ablate, "ROWS", [replace(rows[0], changes=dict(lr=0.01), reason="test")])
    assert main(_flags(out)) == 2  # UserError: the folder holds the row with other settings


def test_a_row_changing_settings_must_say_why():
    with pytest.raises(ValueError, match="without a reason"):
        Row("I", "image", dict(branches="I"), changes=dict(lr=0.1))


def test_summary_statistics_and_paired_differences():
    s = summarise([70.0, 72.0, 77.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(73.0)
    assert s["std"] == pytest.approx(math.sqrt(13.0)) and s["se"] == pytest.approx(math.sqrt(13.0 / 3))
    assert summarise([70.0])["std"] is None and summarise([])["mean"] is None
    p = paired({0: 72.0, 1: 75.0, 2: 71.0}, {0: 70.0, 2: 70.0, 3: 60.0})
    assert p["seeds"] == [0, 2] and p["differences"] == [2.0, 1.0] and p["mean"] == pytest.approx(1.5)
    assert p["se"] == pytest.approx(statistics_se([2.0, 1.0]))


def statistics_se(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def test_pairs_merged_accuracy_counts_the_motion_partner_as_right(tmp_path):
    classes = ["left", "right", "star"]
    confusion = [[3, 5, 2],   # left: 3 right, 5 taken for its partner, 2 for the star
                 [0, 4, 0],
                 [1, 1, 6]]   # the star has no partner: only 6 right
    partners = {"left": "right", "right": "left"}
    assert pairs_merged_accuracy(confusion, classes, partners) == (8 + 4 + 6) / 22
    assert pairs_merged_accuracy(confusion, classes, {}) == (3 + 4 + 6) / 22
    assert motion_partners(tmp_path) is None  # no dataset card: real data


def test_motion_partners_from_the_dataset_card(tiny_dataset):
    assert motion_partners(tiny_dataset) == {"red_ball_left": "red_ball_right", "red_ball_right": "red_ball_left"}
