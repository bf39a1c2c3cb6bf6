"""``webda ablate --preset tiny --seeds 1`` (with few steps) writes the table; a rerun reuses finished runs."""

import json

from webda.ablate import ROWS
from webda.cli import main


def test_ablate_writes_the_table_and_reuses_finished_runs(tmp_path):
    out = tmp_path / "ablate"
    flags = ["ablate", "--preset", "tiny", "--seeds", "1", "--out", str(out), "--image-steps", "2",
             "--video-steps", "2", "--no-progress"]
    assert main(flags) == 0
    table = (out / "ablation.md").read_text()
    results = json.loads((out / "ablation.json").read_text())
    for row in ROWS:
        assert f"| {row.name} |" in table
        assert f"{row.paper:.1f}" in table
        assert len(results["top1"][row.name]) == 1 and 0.0 <= results["top1"][row.name][0] <= 1.0
    assert "synthetic" in table and "UCF-101" in table

    checkpoints = {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/last.pt")}
    assert len(checkpoints) == len(ROWS)
    assert main(flags) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/last.pt")} == checkpoints
    assert (out / "ablation.md").read_text() == table
