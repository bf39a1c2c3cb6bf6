"""Evaluation on target videos and ``webda evaluate``.

Each test video contributes evenly spaced centre-cropped chunks (:class:`ClipDataset` with
``train=False``). A video model predicts each chunk; an image model predicts each frame of a
chunk and the chunk's prediction is the mean over its frames. A video's prediction is the
mean of its chunks' softmax probabilities. Reported: top-1 accuracy, per-class accuracy and
the confusion matrix (rows: true class, columns: predicted class).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from webda.config import AT_LEAST_0, AT_LEAST_1, flag_type
from webda.errors import UserError
from webda_kernels.nn import from_frames, to_frames


@torch.no_grad()
def predict_videos(net: nn.Module, clips: Dataset, video_model: bool, device: torch.device, batch_size: int = 8,
                   workers: int = 0, autocast_dtype=None, progress: bool = False):
    """Mean softmax probabilities per video: (V, K), and the videos' labels (V,).

    ``clips`` yields ``(clip (3, T, H, W), label, video index)``; ``video_model`` False runs
    ``net`` on every frame (an image model).
    """
    was_training = net.training
    net.eval()
    sums: Dict[int, torch.Tensor] = {}
    counts: Dict[int, int] = {}
    labels: Dict[int, int] = {}
    loader = DataLoader(clips, batch_size=batch_size, shuffle=False, num_workers=workers)
    for x, y, video in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if video_model:
                probs = net(x).float().softmax(1)
            else:
                per_frame = net(to_frames(x)).float().softmax(1)
                probs = from_frames(per_frame, x.shape[0], x.shape[2]).mean(2)
        for p, label, v in zip(probs.cpu(), y.tolist(), video.tolist()):
            sums[v] = sums.get(v, 0) + p
            counts[v] = counts.get(v, 0) + 1
            labels[v] = label
    net.train(was_training)
    order = sorted(sums)
    return torch.stack([sums[v] / counts[v] for v in order]), torch.tensor([labels[v] for v in order])


def accuracy_report(probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict:
    """top1, per-class accuracy (None for a class without videos) and confusion matrix."""
    k = len(classes)
    pred = probs.argmax(1)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = {
        name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
        for i, name in enumerate(classes)
    }
    return {
        "top1": float((pred == labels).float().mean()),
        "videos": int(labels.numel()),
        "per_class": per_class,
        "classes": list(classes),
        "confusion": confusion.tolist(),
    }


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="top-1, per-class accuracy and confusion matrix of a checkpoint on target videos",
        description="Evaluate a checkpoint (stage 1 or 2) on a target split: chunk (or frame) predictions "
        "averaged per video. Writes JSON and prints top-1.",
    )
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train-image or train-video")
    parser.add_argument("--split", default="test", help="target split to evaluate (default: test)")
    parser.add_argument("--out", help="JSON file to write (default: evaluation-<split>.json next to the checkpoint)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=flag_type(int, AT_LEAST_1), default=8, help="chunks per forward pass")
    parser.add_argument("--workers", type=flag_type(int, AT_LEAST_0), default=0, help="data-loading worker processes")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from webda.checkpoint import load_network
    from webda.data.layout import discover
    from webda.distributed import pick_device
    from webda.paths import output_file
    from webda.train.data import evaluation_data
    from webda.train.stages import STAGES

    device = pick_device(args.device)
    net, cfg, meta = load_network(args.checkpoint, device)
    out = output_file(args.out or Path(args.checkpoint).parent / f"evaluation-{args.split}.json", "--out")
    layout = discover(args.data, show_progress=args.progress)
    if tuple(layout.classes) != tuple(meta["classes"]):
        raise UserError(f"{args.checkpoint} was trained on classes {meta['classes']}, {args.data} has "
                        f"{list(layout.classes)}")
    clips = evaluation_data(cfg, layout.target_videos(args.split))
    probs, labels = predict_videos(net, clips, STAGES[meta["stage"]].video_model, device, args.batch_size,
                                   args.workers, progress=args.progress)
    report = {"checkpoint": str(args.checkpoint), "stage": meta["stage"], "step": meta["step"], "split": args.split,
              **accuracy_report(probs, labels, layout.classes)}
    out.write_text(json.dumps(report, indent=1))
    print(f"{meta['stage']} model, step {meta['step']}: top-1 {report['top1']:.3f} on {report['videos']} "
          f"target {args.split} videos; wrote {out}")
    return 0
