"""Training curves of one stage from its ``metrics.jsonl`` (written by :mod:`webda.train.engine`).

Three panels over training steps: the losses (total, attention-weighted cross-entropy per
labeled branch, domain loss per domain pair), the domain discriminators' accuracy (0.5 = the
encoder fools them), and accuracy: web-label accuracy of the training batches and top-1 on
the target test split at each evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from webda.report.plotting import plt, save_figure


def read_metrics(path) -> List[dict]:
    """The records of a ``metrics.jsonl`` file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _series(records: List[dict], kind: str, prefixes) -> Dict[str, tuple]:
    """``{key: (steps, values)}`` of the keys of ``kind`` records that start with one of ``prefixes``."""
    out: Dict[str, tuple] = {}
    for record in records:
        if record["kind"] != kind:
            continue
        for key, value in record.items():
            if any(key == p or key.startswith(p + "/") for p in prefixes) and isinstance(value, (int, float)):
                steps, values = out.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(value)
    return out


def plot_training_curves(records: List[dict], title: str, out_png) -> Path:
    """Write the three panels of ``records`` (one stage's metrics) to ``out_png``."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    panels = [
        (axes[0], _series(records, "train", ["loss", "ce", "domain"]), "loss"),
        (axes[1], _series(records, "train", ["domain_acc"]), "discriminator accuracy"),
        (axes[2], {**_series(records, "train", ["acc"]), **_series(records, "eval", ["top1"])}, "accuracy"),
    ]
    for ax, series, ylabel in panels:
        for key, (steps, values) in sorted(series.items()):
            label = "target test top-1" if key == "top1" else key
            ax.plot(steps, values, marker="o" if key == "top1" else None, markersize=4, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not recorded in this run\n(no domain adaptation)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    axes[1].axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axes[2].set_ylim(0, 1.02)
    fig.suptitle(title)
    return save_figure(fig, out_png)
