"""The report of a ``webda demo`` run, assembled from the run's folder.

A demo run folder holds ``data/`` (the generated dataset, its card and keyframe cache with
``overlap_report.json``), ``image/`` (stage 1: attention + domain adaptation), ``image-no-da/``
(stage 1 without domain adaptation, the "before" network of the t-SNE figure), ``video/``
(stage 2 from ``image/last.pt``); each run folder holds ``last.pt``, ``metrics.jsonl`` and
``evaluation-test.json``. :func:`build_report` writes ``report/`` (``report.md``, ``index.html``
and the PNGs they show) and can be rerun on a finished run. The report ends with the ablation
recorded by ``webda ablate`` under ``benchmarks/results/ablation/`` (:mod:`webda.report.recorded_ablation`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import torch
from tqdm.auto import tqdm

from webda.attention_weights import web_item_weights
from webda.checkpoint import load_network
from webda.data.layout import Item
from webda.data.prepare import CACHE_NAME, PreparedData, prepare
from webda.report.attention_grid import plot_attention_grid, weights_by_noise
from webda.report.confusion import plot_confusion
from webda.report.curves import plot_training_curves, read_metrics
from webda.report.document import Document, Figure, Heading, Paragraph, Table
from webda.report.features import encoder_embeddings
from webda.report.ground_truth import GroundTruth
from webda.report.overlap import KINDS, overlap_summary
from webda.report.recorded_ablation import recorded_ablation_blocks
from webda.report.tsne import domain_agreement, plot_tsne, subsample

DATA, IMAGE, IMAGE_NO_DA, VIDEO, REPORT = "data", "image", "image-no-da", "video", "report"
EVALUATION = "evaluation-test.json"
TSNE_POINTS = 150  # per domain


def _evaluation(run: Path, name: str) -> dict:
    return json.loads((run / name / EVALUATION).read_text())


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _mean_accuracy(report: dict, classes) -> Optional[float]:
    values = [report["per_class"][c] for c in classes if report["per_class"][c] is not None]
    return sum(values) / len(values) if values else None


def _results(doc: Document, run: Path, truth: GroundTruth) -> None:
    image, no_da, video = (_evaluation(run, n) for n in (IMAGE, IMAGE_NO_DA, VIDEO))
    doc.add(Heading("Results on the target test split"),
            Paragraph(f"Top-1 accuracy (%) over {video['videos']} target test videos, predictions averaged over "
                      f"each video's chunks (image models: over its frames), after {image['step']} training steps "
                      f"of stage 1 and {video['step']} of stage 2 (settings in each run's `config.toml`)."),
            Table(["model", "top-1 (%)"], [
                ["image model, stage 1 without domain adaptation (I+F, A)", _pct(no_da["top1"])],
                ["image model, stage 1 (I+F, A+DA)", _pct(image["top1"])],
                ["**video model, stage 2 (V, A+DA)**", f"**{_pct(video['top1'])}**"],
            ]))
    pairs = {c["name"]: c.get("pair") for c in truth.card["classes"]}
    rows = [[name, pairs[name] or "(appearance)", _pct(image["per_class"][name]), _pct(video["per_class"][name])]
            for name in video["classes"]]
    for group, members in (("motion-pair classes", [n for n in pairs if pairs[n]]),
                           ("appearance classes", [n for n in pairs if not pairs[n]])):
        means = [_mean_accuracy(report, members) for report in (image, video)]
        rows.append([f"**mean, {group}**", "", *(f"**{_pct(m)}**" for m in means)])
    doc.add(Paragraph("Per-class accuracy (%). Classes with a motion partner look the same in every frame and "
                      "differ only by how they move: an image model can at best guess between the two."),
            Table(["class", "motion partner", "image model", "video model"], rows))
    plot_confusion(image, "image model", run / REPORT / "confusion_image.png")
    plot_confusion(video, "video model", run / REPORT / "confusion_video.png")
    doc.add(Figure("confusion_image.png", "Confusion matrix of the image model (rows: true class)."),
            Figure("confusion_video.png", "Confusion matrix of the video model (rows: true class)."))


def _curves(doc: Document, run: Path) -> None:
    doc.add(Heading("Training curves"),
            Paragraph("Losses, domain-discriminator accuracy (0.5: the encoder's features fool the discriminator) "
                      "and accuracy (web labels of the training batches; top-1 on the target test split at each "
                      "evaluation) over training steps, from each run's `metrics.jsonl`."))
    for name, title in ((IMAGE, "stage 1: image model"), (VIDEO, "stage 2: video model")):
        plot_training_curves(read_metrics(run / name / "metrics.jsonl"), title, run / REPORT / f"curves_{name}.png")
        doc.add(Figure(f"curves_{name}.png", f"Training curves, {title}."))


def _tsne(doc: Document, run: Path, data: PreparedData, seed: int) -> None:
    groups = subsample({
        "web image": data.web_images,
        "web video": data.web_frames(),
        "target video": data.keyframes.items(data.layout.target_videos("train")),
    }, TSNE_POINTS, seed)
    n = min(len(items) for items in groups.values())
    balanced = [item for items in groups.values() for item in items[:n]]  # equal domains for the agreement
    domains = [d for d, items in groups.items() for _ in items[:n]]
    rows, agreement = [], {}
    for name, title in ((IMAGE_NO_DA, "without domain adaptation"), (IMAGE, "with domain adaptation")):
        net, cfg, _ = load_network(run / name / "last.pt", torch.device("cpu"))
        features = encoder_embeddings(net, balanced, cfg.size)
        rows.append((title, features))
        agreement[title] = domain_agreement(features, domains)
    plot_tsne(rows, domains, [item.label for item in balanced], data.classes, run / REPORT / "tsne.png", seed)
    doc.add(Heading("Web and target features before and after domain adaptation (paper Fig. 2)"),
            Paragraph(f"t-SNE of the stage-1 encoder's embeddings of {n} random items per domain (web images, "
                      "keyframes of web videos, keyframes of target training videos), for the image model trained "
                      "without domain adaptation (the \"before\" network: same data, attention and steps) and with "
                      "it. Web items are coloured by their web label, target items by their folder's class. "
                      "Same-domain share of the 10 nearest neighbours (1/3 when the domains are fully mixed): "
                      + "; ".join(f"{t}: {a:.2f}" for t, a in agreement.items()) + "."),
            Figure("tsne.png", "t-SNE of web and target features without (top) and with (bottom) domain adaptation."))


def _attention(doc: Document, run: Path, data: PreparedData, truth: GroundTruth, seed: int) -> None:
    ckpt = run / IMAGE / "last.pt"
    targets = data.target_frames("train")
    images = data.web_images
    image_weights = web_item_weights(ckpt, images, targets, "image", seed=seed)
    image_noise = [truth.noise(item.path) for item in images]
    keyframes = [kf for video in data.web_videos for kf in data.keyframes.of(video.path)]
    frame_weights = web_item_weights(ckpt, [Item(kf.path, kf.label) for kf in keyframes], targets, "frame", seed=seed)
    frame_noise = [truth.frame_noise(kf.video, kf.shot.keyframe) for kf in keyframes]
    plot_attention_grid(images, image_weights.tolist(), image_noise, data.classes, run / REPORT / "attention.png")
    rows = []
    for branch, weights, noise in (("web images", image_weights, image_noise),
                                   ("web video keyframes", frame_weights, frame_noise)):
        for kind, stats in weights_by_noise(weights.tolist(), noise).items():
            rows.append([branch, kind, stats["items"], f"{stats['mean_weight']:.2f}"])
    doc.add(Heading("Attention weights of web items (paper Fig. 6)"),
            Paragraph("Each web item's weight is `alpha x batch size` under the trained image model, averaged over "
                      "random web batches each scored against a random batch of target keyframes (1.00: the weight "
                      "without attention). Noise flags come from the dataset card, which training never reads: "
                      "irrelevant (random content or adverts), mislabeled (another class's object), keyframes of "
                      "irrelevant shots spliced into web videos, and duplicates of target test items that overlap "
                      "removal missed."),
            Table(["branch", "ground truth", "items", "mean weight"], rows),
            Figure("attention.png", "Per class, the web images of highest (left) and lowest (right) weight; "
                   "frame colour = ground truth (green clean, red noise, kind in the caption)."))


def _overlap(doc: Document, data: PreparedData, truth: GroundTruth) -> None:
    summary = overlap_summary(data.overlap_report, truth)
    rows = [[KINDS[kind], s["items"], s["dropped"], f"{s['duplicates_dropped']} of {s['duplicates']}",
             s["others_dropped"]] for kind, s in summary.items()]
    doc.add(Heading("Overlap removal"),
            Paragraph(f"Web items whose embedding has cosine similarity above {data.overlap_report['threshold']} "
                      f"with any of the {data.overlap_report['target_keyframes']} target keyframes are dropped "
                      f"before training (embedding: `{data.overlap_report['embedding']}`). The generator planted "
                      "near-copies of target test keyframes among the web images and re-uploads of target test "
                      "videos among the web videos."),
            Table(["web items", "total", "dropped", "planted duplicates dropped", "other items dropped"], rows))


def build_report(run, seed: int = 0, data: Optional[PreparedData] = None, show_progress: bool = True) -> Path:
    """Write ``run/report/`` from a finished demo run; returns the path of ``report.md``.

    ``data``: the run's prepared dataset, if at hand (else prepared again from the cache).
    """
    run = Path(run)
    (run / REPORT).mkdir(parents=True, exist_ok=True)
    truth = GroundTruth(run / DATA)
    if data is None:
        data = prepare(run / DATA, run / DATA / CACHE_NAME, show_progress=show_progress)
    card = truth.card
    doc = Document("webda demo report")
    doc.add(Paragraph(f"Generated dataset `{card['preset']}` (seed {card['seed']}): "
                      f"{data.layout.summary()}. Everything below is on this synthetic stand-in for web data and "
                      "UCF-101, not on real videos."))
    sections = [
        ("results", lambda: _results(doc, run, truth)),
        ("training curves", lambda: _curves(doc, run)),
        ("t-SNE", lambda: _tsne(doc, run, data, seed)),
        ("attention weights", lambda: _attention(doc, run, data, truth, seed)),
        ("overlap removal", lambda: _overlap(doc, data, truth)),
        ("recorded ablation", lambda: doc.add(*recorded_ablation_blocks())),
    ]
    with tqdm(sections, desc="report", unit="section", disable=not show_progress) as bar:
        for name, section in bar:
            bar.set_postfix_str(name)
            section()
    return doc.write(run / REPORT)


def report_figures(run) -> List[Path]:
    """The PNG files :func:`build_report` writes (for checks)."""
    names = ["confusion_image", "confusion_video", f"curves_{IMAGE}", f"curves_{VIDEO}", "tsne", "attention"]
    return [Path(run) / REPORT / f"{name}.png" for name in names]


