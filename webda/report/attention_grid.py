"""Web images with the highest and lowest attention weight, per class (paper Fig. 6).

Weights are relative: ``alpha x batch size``, so 1 is the weight every item would get without
attention (see :func:`webda.attention_weights.web_item_weights`). Each thumbnail is framed by
its ground-truth noise flag from the dataset card (green: clean; red: irrelevant, mislabeled
or duplicate) and captioned with its weight.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from webda.data.images import load_image
from webda.data.layout import Item
from webda.report.plotting import plt, save_figure

CLEAN = "clean"


def weights_by_noise(weights: Sequence[float], noise: Sequence[str]) -> Dict[str, dict]:
    """``{noise kind: {"items": n, "mean_weight": m}}``, plus ``"noisy"`` pooling every kind but clean."""
    groups = defaultdict(list)
    for w, kind in zip(weights, noise):
        groups[kind].append(float(w))
        if kind != CLEAN:
            groups["noisy"].append(float(w))
    return {kind: {"items": len(ws), "mean_weight": float(np.mean(ws))} for kind, ws in sorted(groups.items())}


def plot_attention_grid(items: Sequence[Item], weights: Sequence[float], noise: Sequence[str],
                        classes: Sequence[str], out_png, per_side: int = 4) -> Path:
    """One row per class: its ``per_side`` web images of highest weight, then its ``per_side`` of lowest.

    ``items[i].label`` is the web label (the folder the image was found under), ``weights[i]``
    its relative attention weight and ``noise[i]`` its ground-truth noise kind.
    """
    weights = np.asarray(weights, dtype=float)
    cols = 2 * per_side + 1  # a blank column between highest and lowest
    fig, axes = plt.subplots(len(classes), cols, figsize=(1.45 * cols, 1.75 * len(classes)), squeeze=False)
    for c, name in enumerate(classes):
        members = [i for i, item in enumerate(items) if item.label == c]
        order = sorted(members, key=lambda i: -weights[i])
        highest = order[:per_side]
        lowest = order[::-1][:per_side][::-1] if len(order) > per_side else []
        slots = highest + [None] * (per_side - len(highest)) + [None] + lowest + [None] * (per_side - len(lowest))
        for col, (ax, i) in enumerate(zip(axes[c], slots)):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
            if i is None:
                continue
            ax.imshow(load_image(items[i].path))
            colour = "tab:green" if noise[i] == CLEAN else "tab:red"
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(colour)
                spine.set_linewidth(4)
            caption = f"{weights[i]:.2f}" + ("" if noise[i] == CLEAN else f" {noise[i]}")
            ax.set_title(caption, fontsize=7, color=colour)
    axes[0][per_side // 2].annotate("highest weight", (0.5, 1.35), xycoords="axes fraction", ha="center", fontsize=9)
    axes[0][per_side + 1 + per_side // 2].annotate("lowest weight", (0.5, 1.35), xycoords="axes fraction",
                                                   ha="center", fontsize=9)
    return save_figure(fig, out_png)
