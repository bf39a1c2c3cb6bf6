"""``webda ablate``: the paper's ablation rows (Table 1) on one dataset, over several seeds.

Every row is one training run with the trainer's preset (:data:`webda.config.TRAIN_PRESETS`), the
row's switches (the components it has or lacks) and, where a row needs them, other settings
that differ from the preset, each with its reason (:class:`Row`). Video rows start from the
``I + F (A + DA)`` image model of the same seed (except the ``scratch`` row).

Runs live in ``OUT/seed<S>/<row>/``; each ends with ``row.json`` (status, top-1 or the
reason it failed, seconds, the resolved settings). A row that fails (a diverged loss, any
error) is recorded as failed and the others still run; a rerun reuses every recorded row, so
an interrupted ablation can simply be rerun (delete a row's folder to train it again).

The table (``OUT/ablation.md``, numbers in ``OUT/ablation.json``) gives per row the mean,
sample standard deviation and standard error over seeds of the top-1 accuracy on the target
test split, next to the paper's UCF-101 number; then, for each component, the paired
difference between the row with it and the row without it on the same seeds.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from webda.config import RESUMABLE_CHANGES, differences, from_dict, to_dict
from webda.errors import UserError
from webda.report.document import Block, Document, Paragraph, Table

BEST_IMAGE = "I + F (A + DA)"
RESULT = "row.json"
TITLE = "Ablation (paper Table 1) on the synthetic dataset"


@dataclass(frozen=True)
class Row:
    """One ablation row.

    ``name``: as in the paper's Table 1; ``stage``: "image" or "video"; ``switches``: the
    components that define the row (training settings); ``arch``: branch layout (S single, T
    triplet, D dual/Siamese); ``paper``: the paper's UCF-101 top-1 (%); ``changes``: other
    settings that differ from the preset, with ``reason`` saying why; ``note``: how the row
    differs from the paper's.
    """

    name: str
    stage: str
    switches: Dict[str, object]
    arch: str = "S"
    paper: Optional[float] = None
    changes: Dict[str, object] = field(default_factory=dict)
    reason: str = ""
    note: str = ""

    def __post_init__(self):
        if self.changes and not self.reason:
            raise ValueError(f"row {self.name!r}: settings {sorted(self.changes)} differ from the preset without "
                             "a reason")

    @property
    def settings(self) -> Dict[str, object]:
        return {**self.switches, **self.changes}


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
    Row("V, no residual (Fig. 5a)", "video", dict(residual=False, **_PLAIN), "S", 70.3,
        changes=dict(temporal_lr=0.1),
        reason="temporal filters at a tenth of the preset's rate: the plain block (identity-initialised, no "
        "residual) collapses at the preset's rate (its loss rises from the first steps), as the paper warns"),
    Row("V, from scratch", "video", dict(init="scratch", **_PLAIN), "S", 59.1,
        note="paper: ImageNet init instead of the image model; ours: random init, spatial weights trained"),
]

# (what is compared, the row with it, the row without it): paired over seeds.
COMPARISONS = [
    ("web frames added to web images", "I + F", "I"),
    ("web images added to web frames", "I + F", "F"),
    ("A, stage 1", "I + F (A)", "I + F"),
    ("DA, stage 1", "I + F (DA)", "I + F"),
    ("A, stage 1, with DA", BEST_IMAGE, "I + F (DA)"),
    ("DA, stage 1, with A", BEST_IMAGE, "I + F (A)"),
    ("stage 2 over its image model", "V (A + DA)", BEST_IMAGE),
    ("A, stage 2", "V (A)", "V"),
    ("DA, stage 2", "V (DA)", "V"),
    ("A, stage 2, with DA", "V (A + DA)", "V (DA)"),
    ("DA, stage 2, with A", "V (A + DA)", "V (A)"),
    ("residual temporal block (Fig. 5b vs 5a)", "V", "V, no residual (Fig. 5a)"),
    ("image-model init", "V", "V, from scratch"),
]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def row_folder(out: Path, seed: int, row: Row) -> Path:
    return Path(out) / f"seed{seed}" / _slug(row.name)


def _row_config(row: Row, data: Path, out: Path, preset: str, seed: int, steps: Dict[str, Optional[int]],
                progress: bool):
    from webda.train.stages import STAGES

    values = dict(data=str(data), out=str(row_folder(out, seed, row)), seed=seed, progress=progress, resume=True,
                  **row.settings)
    if steps[row.stage] is not None:
        values["steps"] = steps[row.stage]
    if row.stage == "video":
        values.setdefault("init", str(row_folder(out, seed, _row(BEST_IMAGE)) / "last.pt"))
    return STAGES[row.stage].settings(preset, **values)


def _row(name: str) -> Row:
    return next(row for row in ROWS if row.name == name)


def _run_row(row: Row, cfg, seed: int, upstream: Optional[dict], commit: str) -> dict:
    """The result record of ``row`` for ``seed``: read from a recorded run, or trained now.

    A training error (a diverged loss, or anything else but an interrupt) is recorded as a
    failed row; so is a video row whose image model failed (``upstream``).
    """
    from webda.train.engine import train

    folder = Path(cfg.out)
    path = folder / RESULT
    if path.is_file():
        record = json.loads(path.read_text())
        # The folder's own path (and the image model's under it) may differ if OUT was moved.
        recorded = from_dict(type(cfg), record["config"], str(path))
        changed = differences(recorded, cfg, RESUMABLE_CHANGES | {"out", "init"})
        if changed:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise UserError(f"{folder} holds a run of {row.name!r} with other settings ({listed}); use another --out "
                            "or delete that folder")
        if record["status"] == "ok" and "confusion" not in record:  # recorded before rows kept their confusion
            report = json.loads((folder / "evaluation-test.json").read_text())
            record.update(classes=report["classes"], confusion=report["confusion"])
        return record
    record = {"row": row.name, "seed": seed, "commit": commit, "config": to_dict(cfg)}
    start = time.perf_counter()
    if upstream is not None and upstream["status"] != "ok":
        record.update(status="failed", reason=f"its image model ({BEST_IMAGE}, seed {seed}) failed")
    else:
        try:
            report = train(cfg)
            record.update(status="ok", top1=report["top1"], videos=report["videos"], classes=report["classes"],
                          confusion=report["confusion"])
        except Exception as err:  # noqa: BLE001 -- any failure of one row is recorded, the others still run
            record.update(status="failed", reason=f"{type(err).__name__}: {err}" if not isinstance(err, UserError)
                          else str(err))
    record["seconds"] = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record


def motion_partners(data: Path) -> Optional[Dict[str, str]]:
    """``{class: its motion partner}`` from the generated dataset's card at ``data`` (None
    without a card, e.g. real data)."""
    from webda.data.synthetic import CARD_NAME

    card = Path(data) / CARD_NAME
    if not card.is_file():
        return None
    return {c["name"]: c["pair"] for c in json.loads(card.read_text())["classes"] if c.get("pair")}


def pairs_merged_accuracy(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                          partners: Dict[str, str]) -> float:
    """Top-1 from a confusion matrix (rows: true class) where a video predicted as its class's
    motion partner counts as right."""
    index = {name: i for i, name in enumerate(classes)}
    right = sum(row[i] + (row[index[partners[name]]] if name in partners else 0)
                for i, (name, row) in enumerate(zip(classes, confusion)))
    return right / sum(map(sum, confusion))


def summarise(values: Sequence[float]) -> dict:
    """``n``, ``mean``, sample ``std`` and standard error ``se`` (``std / sqrt(n)``) of ``values``
    (None where there are too few values)."""
    n = len(values)
    mean = statistics.mean(values) if n else None
    std = statistics.stdev(values) if n > 1 else None
    return {"n": n, "mean": mean, "std": std, "se": None if std is None else std / math.sqrt(n)}


def paired(with_row: Dict[int, float], without_row: Dict[int, float]) -> dict:
    """Paired difference ``with - without`` over the seeds both rows have: :func:`summarise` of
    the per-seed differences, plus ``seeds`` and ``differences``."""
    seeds = sorted(set(with_row) & set(without_row))
    diffs = [with_row[s] - without_row[s] for s in seeds]
    return {"seeds": seeds, "differences": diffs, **summarise(diffs)}


def format_number(x: Optional[float], digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _settings_text(row: Row) -> str:
    parts = [f"{k}={v}" for k, v in row.switches.items()]
    parts += [f"**{k}={v}**" for k, v in row.changes.items()]
    return ", ".join(parts)


ROW_HEADER = ["row", "arch", "settings", "ours, synthetic (%)", "std", "SE", "per seed", "pairs merged (%)", "SE",
              "paper, UCF-101 (%)", "s / seed"]
EFFECT_HEADER = ["effect", "with", "without", "mean", "std", "SE", "mean / SE", "per seed", "pairs merged: mean",
                 "SE", "mean / SE", "paper"]


def _ratio(stats: dict) -> Optional[float]:
    return None if not stats["se"] else stats["mean"] / stats["se"]


def _row_table(summary: dict) -> Table:
    rows = []
    for r in summary["rows"]:
        per_seed = ", ".join("failed" if v is None else format_number(v) for v in r["per_seed"])
        merged = r.get("merged", {"mean": None, "se": None})
        rows.append([r["name"], r["arch"], r["settings"], *map(format_number, (r["mean"], r["std"], r["se"])), per_seed,
                     *map(format_number, (merged["mean"], merged["se"], r["paper"])),
                     format_number(statistics.mean(r["seconds"]), 0)])
    return Table(ROW_HEADER, rows)


def _effect_table(summary: dict) -> Table:
    rows = []
    for c in summary["comparisons"]:
        merged = c.get("merged", {"mean": None, "se": None})
        paper = "" if c["paper"] is None else f"{c['paper']:+.1f}"
        rows.append([c["name"], c["with"], c["without"], *map(format_number, (c["mean"], c["std"], c["se"], _ratio(c))),
                     ", ".join(map(format_number, c["differences"])),
                     *map(format_number, (merged["mean"], merged["se"], _ratio(merged))), paper])
    return Table(EFFECT_HEADER, rows)


def table_blocks(summary: dict) -> List[Block]:
    """The ablation table of an ``ablation.json`` summary as report blocks: caption, accuracy per
    row, paired effects, row notes, failed runs, the commit and compute time."""
    blocks: List[Block] = [
        Paragraph(f"Top-1 accuracy (%) on the {summary['test_videos']} target test videos of the **synthetic** "
                  f"`{summary['preset']}` dataset over seeds {', '.join(map(str, range(summary['seeds'])))}: mean, "
                  "sample standard deviation and standard error (SE = std / sqrt(n)) over the seeds that finished, "
                  "next to the paper's UCF-101 number for the same row (Table 1, averaged over UCF-101's 3 splits). "
                  "The two columns are different datasets: compare the order of the rows and the sign of the "
                  f"effects, not the numbers. Video rows start from the {BEST_IMAGE} image model of the same seed. "
                  "Arch: S single branch, T triplet, D dual (Siamese). Settings: the row's switches; in bold, other "
                  "settings that differ from the preset (reason below). Pairs merged: the same top-1 where a video "
                  "predicted as its class's motion partner counts as right; the two classes of a motion pair look "
                  "the same in every frame, so an image model can only guess between them, and this column shows "
                  "what it learned without that guess."),
        _row_table(summary),
        Paragraph("Paired effects (percentage points): per seed, the row with the component minus the row without "
                  "it; mean, sample std and SE over the seeds where both rows finished; |mean| / SE > 1: the effect "
                  "is larger than its standard error. Paper: the same difference in the paper's Table 1."),
        _effect_table(summary),
    ]
    notes = [f"- {r['name']}: {note}" for r in summary["rows"] for note in r["notes"]]
    failures = [f"- {r['name']}, seed {seed}: {reason}"
                for r in summary["rows"] for seed, reason in r["failed"].items()]
    if notes:
        blocks.append(Paragraph("\n".join(["Row notes:", "", *notes])))
    if failures:
        blocks.append(Paragraph("\n".join(["Failed runs (not in the means):", "", *failures])))
    blocks.append(Paragraph(
        f"Measured by commit `{summary['commit']}` (each commit that trained a row). Time: "
        f"{summary['compute_seconds'] / 60:.1f} min in all (dataset generation and preparation "
        f"{summary['setup_seconds']:.0f} s, plus every row's training and evaluation, s / seed above, summed over the "
        "invocations that ran them); the invocation that wrote this table ran "
        f"{summary['wall_seconds'] / 60:.1f} min."))
    return blocks


def source_commit() -> str:
    """The git commit of the webda source tree (``-dirty`` with uncommitted changes), or "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def _summary(records: Dict[str, Dict[int, dict]], preset: str, seeds: int, setup_seconds: float,
             wall_seconds: float, partners: Optional[Dict[str, str]]) -> dict:
    """The ``ablation.json`` summary: self-contained (row definitions and paper numbers included).

    With ``partners`` (motion pairs of a generated dataset), every row and comparison also has
    ``merged``: the same statistics of :func:`pairs_merged_accuracy`.
    """
    rows, top1, merged = [], {}, {}
    for row in ROWS:
        by_seed = records[row.name]
        ok = {s: r for s, r in by_seed.items() if r["status"] == "ok"}
        top1[row.name] = {s: 100 * r["top1"] for s, r in ok.items()}
        if partners:
            merged[row.name] = {s: 100 * pairs_merged_accuracy(r["confusion"], r["classes"], partners)
                                for s, r in ok.items()}
        rows.append({
            "name": row.name, "stage": row.stage, "arch": row.arch, "settings": _settings_text(row),
            "paper": row.paper, "notes": [text for text in (row.reason, row.note) if text],
            "per_seed": [top1[row.name].get(s) for s in range(seeds)],
            "failed": {s: r["reason"] for s, r in by_seed.items() if r["status"] != "ok"},
            "seconds": [by_seed[s]["seconds"] for s in range(seeds)],
            **summarise(list(top1[row.name].values())),
            **({"merged": summarise(list(merged[row.name].values()))} if partners else {}),
        })
    comparisons = []
    for name, with_row, without_row in COMPARISONS:
        paper = [_row(with_row).paper, _row(without_row).paper]
        comparisons.append({"name": name, "with": with_row, "without": without_row,
                            "paper": None if None in paper else paper[0] - paper[1],
                            **paired(top1[with_row], top1[without_row]),
                            **({"merged": paired(merged[with_row], merged[without_row])} if partners else {})})
    videos = {r.get("videos") for by_seed in records.values() for r in by_seed.values() if r.get("videos")}
    compute = setup_seconds + sum(sum(r["seconds"]) for r in rows)
    commits = sorted({r.get("commit", "unknown") for by_seed in records.values() for r in by_seed.values()})
    return {"preset": preset, "seeds": seeds, "commit": ", ".join(commits), "test_videos": max(videos) if videos else 0,
            "setup_seconds": setup_seconds, "compute_seconds": compute, "wall_seconds": wall_seconds,
            "pairs_merged": bool(partners), "rows": rows, "comparisons": comparisons}


def run_ablation(out, preset: str = "bench", seeds: int = 5, data=None, image_steps: Optional[int] = None,
                 video_steps: Optional[int] = None, progress: bool = True) -> Path:
    """Train every row of :data:`ROWS` for seeds ``0..seeds-1`` on ``data`` (default: generate
    the ``preset`` dataset into ``out/data``); returns the path of ``ablation.md``."""
    from webda.data.prepare import prepare
    from webda.data.synthetic import generate

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup_file = out / "setup.json"
    setup = json.loads(setup_file.read_text()) if setup_file.is_file() else {"seconds": 0.0}
    start = time.perf_counter()
    if data is None:
        data = out / "data"
        if not data.is_dir():
            generate(data, preset, 0, show_progress=progress)
    prepare(data, show_progress=progress)  # keyframes and overlap removal, cached for every row
    if not setup_file.is_file():
        setup["seconds"] = time.perf_counter() - start
        setup_file.write_text(json.dumps(setup))
    steps = {"image": image_steps, "video": video_steps}
    commit = source_commit()
    records: Dict[str, Dict[int, dict]] = {row.name: {} for row in ROWS}
    for seed in range(seeds):
        for i, row in enumerate(ROWS, start=1):
            print(f"[seed {seed}, {i}/{len(ROWS)}] {row.name} ({time.perf_counter() - start:.0f} s)", flush=True)
            cfg = _row_config(row, Path(data), out, preset, seed, steps, progress)
            upstream = records[BEST_IMAGE][seed] if row.stage == "video" and cfg.init != "scratch" else None
            records[row.name][seed] = record = _run_row(row, cfg, seed, upstream, commit)
            outcome = f"top-1 {100 * record['top1']:.1f}" if record["status"] == "ok" else f"failed: {record['reason']}"
            print(f"[seed {seed}] {row.name}: {outcome} ({record['seconds']:.0f} s)", flush=True)
    summary = _summary(records, preset, seeds, setup["seconds"], time.perf_counter() - start,
                       motion_partners(Path(data)))
    (out / "ablation.json").write_text(json.dumps(summary, indent=1))
    table = out / "ablation.md"
    table.write_text(Document(TITLE, table_blocks(summary)).markdown())
    return table


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablate", help="the paper's ablation rows (Table 1) on the generated dataset, over seeds",
        description="Train the paper's ablation rows (image model: I, F, I+F, I+F (A), I+F (DA), I+F (A+DA); video "
        "model: V with and without attention and DA, without the residual connection, from scratch) and write a "
        "Markdown table next to the paper's UCF-101 numbers, with the spread over seeds and the paired effect of "
        "each component. A row that fails is recorded as failed and the others run; rerun to resume.",
    )
    parser.add_argument("--preset", choices=["tiny", "small", "bench"], default="bench",
                        help="dataset and training size (default: bench, made for this table)")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds 0..N-1 per row (default: 5)")
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
