"""``webda ablate``: the paper's ablation rows (Table 1) on one dataset, over several seeds.

Every row is one training run with the trainer's preset (:data:`webda.config.TRAIN_PRESETS`) and
the row's switches; video rows start from the ``I + F (A + DA)`` image model of the same
seed (except the ``scratch`` row). Runs live in ``OUT/seed<S>/<row>/``; a finished run (one
with ``evaluation-test.json``) is not trained again, an interrupted one resumes, so an
interrupted ablation can simply be rerun. The table (``OUT/ablation.md``, numbers also in
``OUT/ablation.json``) gives the top-1 accuracy on the target test split, mean and sample
standard deviation over seeds, next to the paper's UCF-101 numbers for the same row.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from webda.errors import UserError

BEST_IMAGE = "I + F (A + DA)"


@dataclass(frozen=True)
class Row:
    """One ablation row: its name in the paper's Table 1, the stage, the switches that differ
    from the preset, the branch layout (S single, T triplet, D dual/Siamese) and the paper's
    UCF-101 top-1 (%)."""

    name: str
    stage: str
    settings: Dict[str, object] = field(default_factory=dict)
    arch: str = "S"
    paper: Optional[float] = None
    note: str = ""


_PLAIN = dict(attention=False, da=False)
ROWS: List[Row] = [
    Row("I", "image", dict(branches="I", **_PLAIN), "S", 62.9),
    Row("F", "image", dict(branches="F", **_PLAIN), "S", 57.9),
    Row("I + F", "image", dict(branches="IF", **_PLAIN), "S", 70.1),
    Row("I + F (A)", "image", dict(branches="IF", attention=True, da=False), "T", 71.4),
    Row("I + F (DA)", "image", dict(branches="IF", attention=False, da=True), "T", 72.2),
    Row(BEST_IMAGE, "image", dict(branches="IF", attention=True, da=True), "T", 72.6),
    Row("V", "video", dict(_PLAIN), "S", 72.6),
    Row("V (A)", "video", dict(attention=True, da=False), "D", 74.0),
    Row("V (DA)", "video", dict(attention=False, da=True), "D", 74.3),
    Row("V (A + DA)", "video", dict(attention=True, da=True), "D", 74.9),
    Row("V, no residual (Fig. 5a)", "video", dict(residual=False, **_PLAIN), "S", 70.3),
    Row("V, from scratch", "video", dict(init="scratch", **_PLAIN), "S", 59.1,
        "paper: ImageNet init instead of the image model; ours: random init, spatial weights trained"),
]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _run_row(row: Row, data: Path, out: Path, preset: str, seed: int, steps: Dict[str, Optional[int]],
             progress: bool) -> float:
    """Top-1 of ``row`` for ``seed`` (trained now, or read from a finished run)."""
    from webda.train.engine import train
    from webda.train.stages import STAGES

    folder = out / f"seed{seed}" / _slug(row.name)
    report = folder / "evaluation-test.json"
    if report.is_file():
        return json.loads(report.read_text())["top1"]
    values = dict(data=str(data), out=str(folder), seed=seed, progress=progress, resume=True, **row.settings)
    if steps[row.stage] is not None:
        values["steps"] = steps[row.stage]
    if row.stage == "video":
        values.setdefault("init", str(out / f"seed{seed}" / _slug(BEST_IMAGE) / "last.pt"))
    return train(STAGES[row.stage].settings(preset, **values))["top1"]


def _table(results: Dict[str, List[float]], seeds: int, preset: str) -> str:
    spread = f"mean ± sample std over {seeds} seeds" if seeds > 1 else "one seed"
    lines = [
        f"Top-1 accuracy (%) on the target test split of the **synthetic** `{preset}` dataset "
        f"({spread}), next to the paper's UCF-101 numbers for the same "
        "row (Table 1; averaged over UCF-101's 3 splits). The two columns are different datasets: compare the "
        "order of the rows, not the numbers. Video rows start from the I + F (A + DA) image model of the "
        "same seed. Arch: S single branch, T triplet, D dual (Siamese).",
        "",
        "| row | arch | ours, synthetic (%) | per seed | paper, UCF-101 (%) |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        values = [100 * v for v in results[row.name]]
        mean = statistics.mean(values)
        ours = f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"
        paper = "" if row.paper is None else f"{row.paper:.1f}"
        lines.append(f"| {row.name} | {row.arch} | {ours} | {', '.join(f'{v:.1f}' for v in values)} | {paper} |")
    notes = [f"- {row.name}: {row.note}" for row in ROWS if row.note]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def run_ablation(out, preset: str = "small", seeds: int = 2, data=None, image_steps: Optional[int] = None,
                 video_steps: Optional[int] = None, progress: bool = True) -> Path:
    """Train every row of :data:`ROWS` for seeds ``0..seeds-1`` on ``data`` (default: generate
    the ``preset`` dataset into ``out/data``); returns the path of ``ablation.md``."""
    from webda.data.synthetic import generate

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    if data is None:
        data = out / "data"
        if not data.is_dir():
            generate(data, preset, 0, show_progress=progress)
    steps = {"image": image_steps, "video": video_steps}
    results: Dict[str, List[float]] = {row.name: [] for row in ROWS}
    start = time.perf_counter()
    for seed in range(seeds):
        for i, row in enumerate(ROWS, start=1):
            print(f"[seed {seed}, {i}/{len(ROWS)}] {row.name} ({time.perf_counter() - start:.0f} s)", flush=True)
            results[row.name].append(_run_row(row, Path(data), out, preset, seed, steps, progress))
    (out / "ablation.json").write_text(json.dumps({"preset": preset, "seeds": seeds, "top1": results}, indent=1))
    table = out / "ablation.md"
    table.write_text(f"# Ablation (paper Table 1) on the synthetic dataset\n\n{_table(results, seeds, preset)}")
    return table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate", help="the paper's ablation rows (Table 1) on the generated dataset, over seeds",
        description="Train the paper's ablation rows (image model: I, F, I+F, I+F (A), I+F (DA), I+F (A+DA); video "
        "model: V with and without attention and DA, without the residual connection, from scratch) and write a "
        "Markdown table next to the paper's UCF-101 numbers.",
    )
    parser.add_argument("--preset", choices=["tiny", "small"], default="small",
                        help="dataset and training size (default: small)")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds 0..N-1 per row (default: 2)")
    parser.add_argument("--out", default="webda-ablate", help="output folder (default: webda-ablate); rerun to resume")
    parser.add_argument("--data", default=None, help="dataset root to use (default: generate the preset's into OUT/data)")
    parser.add_argument("--image-steps", type=int, default=None, help="training steps of image rows (default: preset's)")
    parser.add_argument("--video-steps", type=int, default=None, help="training steps of video rows (default: preset's)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    table = run_ablation(args.out, args.preset, args.seeds, args.data, args.image_steps, args.video_steps,
                         args.progress)
    print(table.read_text())
    print(f"wrote {table}")
    return 0
