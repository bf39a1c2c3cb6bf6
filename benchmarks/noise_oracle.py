"""What the web noise costs the image model, and how much of it the attention removes.

    python benchmarks/noise_oracle.py --out benchmarks/results/noise_oracle [--seeds 5] [--preset bench]

Writes ``noise_oracle.json`` and ``noise_oracle.md`` to ``--out`` (runs and datasets under
``--work``, default ``OUT/work``; rerun to resume). It generates the preset's dataset and
copies of it with ground-truth noise removed (the dataset card names every noisy file;
training never reads it): without the mislabeled web images, without the irrelevant ones,
without the advert shots spliced into web videos (the same videos generated without their
splice), and without any of these. On each it trains the ablation's I + F row (stage 1, no
attention, no domain adaptation) for seeds 0..N-1, and on the full dataset also I + F (A),
over ``--attention-seeds`` seeds (default N; more resolve a smaller effect).

A removal's paired effect over the full dataset is what a perfect down-weighting of that noise
could gain; the attention's mean weight per noise kind (``webda.attention_weights``, 1 =
uniform) shows how much of it the attention removes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List

import torch

from webda.ablate import ROWS, format_number, motion_partners, paired, pairs_merged_accuracy, source_commit, summarise
from webda.attention_weights import web_item_weights
from webda.data.layout import Item
from webda.data.prepare import prepare
from webda.data.synthetic import CARD_NAME, generate
from webda.report.document import Document, Paragraph, Table
from webda.report.ground_truth import GroundTruth
from webda.train.engine import train
from webda.train.stages import IMAGE_STAGE

# Variant -> (spliced adverts kept, web-image noise kinds removed).
VARIANTS = {
    "full dataset": (True, ()),
    "no mislabeled web images": (True, ("mislabeled",)),
    "no irrelevant web images": (True, ("irrelevant",)),
    "no advert shots in web videos": (False, ()),
    "no noise": (False, ("mislabeled", "irrelevant")),
}
FULL = "full dataset"
ATTENTION = "attention"
NOISE_KINDS = ("mislabeled", "irrelevant")


def make_variant(work: Path, preset: str, adverts: bool, removed) -> Path:
    """The dataset of a variant under ``work``: generated (with or without splices), then the
    web images of the ``removed`` noise kinds deleted from a hard-linked copy."""
    source = work / ("data-full" if adverts else "data-no-adverts")
    if not source.is_dir():
        generate(source, preset, 0, show_progress=False, **({} if adverts else {"splice_rate": 0.0}))
    if not removed:
        return source
    root = work / f"data-{'full' if adverts else 'no-adverts'}-without-{'-'.join(removed)}"
    if not root.is_dir():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, copy_function=os.link, ignore=shutil.ignore_patterns(".webda_cache"))
        card = json.loads((partial / CARD_NAME).read_text())
        for item in card["items"]:
            if item["domain"] == "web_image" and item["noise"] in removed:
                (partial / item["path"]).unlink()
        partial.rename(root)
    return root


def _run_folder(work: Path, name: str, seed: int) -> Path:
    return work / "runs" / name.replace(" ", "-") / f"seed{seed}"


def run(row_name: str, data: Path, out: Path, preset: str, seed: int) -> dict:
    """The evaluation report of the ablation row ``row_name`` trained on ``data`` (resumed)."""
    report = out / "evaluation-test.json"
    if not report.is_file():
        row = next(r for r in ROWS if r.name == row_name)
        train(IMAGE_STAGE.settings(preset, data=str(data), out=str(out), seed=seed, progress=False, **row.settings))
    return json.loads(report.read_text())


def noise_weights(checkpoint: Path, data: Path) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{branch: {"weights": {noise kind: mean weight}, "shares": {noise kind: fraction of the
    branch's items}}}`` of a stage-1 checkpoint trained with attention."""
    prepared, truth = prepare(data, show_progress=False), GroundTruth(data)
    targets = prepared.target_frames("train")
    keyframes = [kf for video in prepared.web_videos for kf in prepared.keyframes.of(video.path)]
    branches = {
        "image": (prepared.web_images, [truth.noise(item.path) for item in prepared.web_images]),
        "frame": ([Item(kf.path, kf.label) for kf in keyframes],
                  [truth.frame_noise(kf.video, kf.shot.keyframe) for kf in keyframes]),
    }
    result = {}
    for branch, (items, noise) in branches.items():
        weights = web_item_weights(checkpoint, items, targets, branch, draws=10)
        kinds = sorted(set(noise))
        result[branch] = {
            "weights": {kind: float(weights[torch.tensor([n == kind for n in noise])].mean()) for kind in kinds},
            "shares": {kind: noise.count(kind) / len(noise) for kind in kinds},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default=None, help="datasets and runs (default: OUT/work)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--attention-seeds", type=int, default=None,
                        help="seeds of the attention's comparison (default: --seeds)")
    parser.add_argument("--preset", default="bench")
    args = parser.parse_args()
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    seeds = range(args.seeds)

    accuracy: Dict[str, Dict[str, Dict[int, float]]] = {}
    for name, (adverts, removed) in VARIANTS.items():
        data = make_variant(work, args.preset, adverts, removed)
        partners = motion_partners(data)  # the same classes in every variant
        accuracy[name] = {"top-1": {}, "pairs merged": {}}
        for seed in seeds:
            report = run("I + F", data, _run_folder(work, name, seed), args.preset, seed)
            print(f"{name}, seed {seed}: top-1 {100 * report['top1']:.1f}", flush=True)
            accuracy[name]["top-1"][seed] = 100 * report["top1"]
            accuracy[name]["pairs merged"][seed] = 100 * pairs_merged_accuracy(report["confusion"], report["classes"],
                                                                                partners)
    full_data = make_variant(work, args.preset, True, ())
    partners = motion_partners(full_data)
    attention: Dict[str, Dict[str, Dict[int, float]]] = {"I + F (A)": {"top-1": {}, "pairs merged": {}},
                                                         "I + F": {m: dict(v) for m, v in accuracy[FULL].items()}}
    weights: List[dict] = []
    for seed in range(args.attention_seeds or args.seeds):
        for row, name in (("I + F (A)", ATTENTION), ("I + F", FULL)):
            report = run(row, full_data, _run_folder(work, name, seed), args.preset, seed)
            attention[row]["top-1"][seed] = 100 * report["top1"]
            attention[row]["pairs merged"][seed] = 100 * pairs_merged_accuracy(report["confusion"],
                                                                                report["classes"], partners)
        gain = attention["I + F (A)"]["top-1"][seed] - attention["I + F"]["top-1"][seed]
        print(f"attention, seed {seed}: {gain:+.1f} points", flush=True)
        if seed in seeds:
            weights.append(noise_weights(_run_folder(work, ATTENTION, seed) / "last.pt", full_data))

    summary = {"preset": args.preset, "seeds": list(seeds), "commit": source_commit(), "variants": {}, "attention": {}}
    for name, acc in accuracy.items():
        summary["variants"][name] = {metric: {"runs": summarise(list(values.values())),
                                              "effect": paired(values, accuracy[FULL][metric])}
                                     for metric, values in acc.items()}
    summary["attention"]["effect"] = {metric: paired(attention["I + F (A)"][metric], attention["I + F"][metric])
                                      for metric in ("top-1", "pairs merged")}
    summary["attention"]["weights"] = {
        branch: {kind: sum(w[branch]["weights"][kind] for w in weights) / len(weights) for kind in kinds["weights"]}
        for branch, kinds in weights[0].items()}
    summary["attention"]["shares"] = {branch: kinds["shares"] for branch, kinds in weights[0].items()}
    (out / "noise_oracle.json").write_text(json.dumps(summary, indent=1))
    (out / "noise_oracle.md").write_text(_markdown(summary))
    print(out / "noise_oracle.md")


def _pm(stats: dict) -> str:
    return "n/a" if stats["se"] is None else f"{stats['mean']:+.1f} ± {stats['se']:.1f}"


def _markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    rows = []
    for name, metrics in summary["variants"].items():
        top1, merged = metrics["top-1"], metrics["pairs merged"]
        rows.append([f"I + F, {name}", format_number(top1["runs"]["mean"]), format_number(top1["runs"]["std"]),
                     "" if name == FULL else _pm(top1["effect"]),
                     "" if name == FULL else _pm(merged["effect"]),
                     ", ".join(f"{d:+.1f}" for d in top1["effect"]["differences"]) if name != FULL else ""])
    effect = summary["attention"]["effect"]
    rows.append(["I + F (A), full dataset", "", "", _pm(effect["top-1"]), _pm(effect["pairs merged"]),
                 ", ".join(f"{d:+.1f}" for d in effect["top-1"]["differences"])])
    weight_rows = [[branch, kind, f"{100 * summary['attention']['shares'][branch][kind]:.1f}", f"{w:.2f}"]
                   for branch, kinds in summary["attention"]["weights"].items() for kind, w in kinds.items()]
    doc = Document("What the web noise costs the image model (stage 1), and what the attention removes", [
        Paragraph(f"`python benchmarks/noise_oracle.py`, preset `{summary['preset']}`, seeds "
                  f"{seeds[0]}-{seeds[-1]}, commit `{summary['commit']}`. Each row trains the ablation's I + F "
                  "(no attention, no domain adaptation) on the generated dataset with the named ground-truth "
                  "noise removed; its effect is the paired difference against the full dataset (mean ± SE over "
                  "the seeds, in points of top-1 on the target test videos): what a perfect down-weighting of "
                  "that noise could gain. The last row is the attention on the full dataset."),
        Table(["run", "top-1 (%)", "std", "effect", "effect, pairs merged", "per seed"], rows),
        Paragraph(f"I + F (A): the attention on the full dataset, over seeds 0-{len(effect['top-1']['seeds']) - 1}."),
        Paragraph("The attention's mean weight per ground-truth kind (`alpha x batch size`, 1 = uniform; "
                  "`webda.attention_weights.web_item_weights`) in the I + F (A) models, averaged over the seeds; "
                  "share: the kind's fraction of the branch's items."),
        Table(["branch", "ground truth", "share (%)", "mean weight"], weight_rows),
    ])
    return doc.markdown()


if __name__ == "__main__":
    main()
