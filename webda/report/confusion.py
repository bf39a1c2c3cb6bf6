"""The confusion matrix of an evaluation report (:func:`webda.evaluate.accuracy_report`) as an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from webda.report.plotting import plt, save_figure


def plot_confusion(report: dict, title: str, out_png) -> Path:
    """Rows: true class, columns: predicted class, cells: number of target videos."""
    classes, confusion = report["classes"], np.asarray(report["confusion"])
    side = 1.6 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(confusion, cmap="Blues", vmin=0)
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > confusion.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: top-1 {report['top1']:.2f}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return save_figure(fig, out_png)
