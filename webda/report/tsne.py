"""t-SNE of web and target features before and after domain adaptation (paper Fig. 2).

Each row of the figure is one network (e.g. trained without, then with, domain adaptation),
embedded with scikit-learn's t-SNE; the left panel colours points by domain (web images, web
video keyframes, target keyframes), the right one by class. When the domains separate
before adaptation and mix after it, the encoder has learned domain-invariant features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from sklearn.manifold import TSNE

from webda.report.plotting import plt, save_figure

DOMAIN_COLOURS = {"web image": "tab:red", "web video": "tab:green", "target video": "tab:blue"}


def tsne_2d(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) t-SNE coordinates (exact gradients, fast for the few hundred
    points of a report; PCA init; perplexity capped at N / 4)."""
    n = features.shape[0]
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(30.0, max(2.0, n / 4)))
    x = torch.nn.functional.normalize(features.float(), dim=1).numpy()
    return TSNE(2, perplexity=perplexity, init="pca", method="exact", random_state=seed).fit_transform(x)


def plot_tsne(rows: Sequence[Tuple[str, torch.Tensor]], domains: Sequence[str], labels: Sequence[int],
              classes: Sequence[str], out_png, seed: int = 0) -> Path:
    """``rows``: (title, features (N, D)) per network, all of the same N points, whose
    ``domains[i]`` is a key of :data:`DOMAIN_COLOURS` and ``labels[i]`` a class index."""
    domains, labels = np.asarray(domains), np.asarray(labels)
    class_colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    markers = {d: m for d, m in zip(DOMAIN_COLOURS, "o^s")}
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.6 * len(rows)), squeeze=False)
    for (title, features), (by_domain, by_class) in zip(rows, axes):
        xy = tsne_2d(features, seed)
        for domain, colour in DOMAIN_COLOURS.items():
            pick = domains == domain
            by_domain.scatter(*xy[pick].T, s=12, c=colour, marker=markers[domain], alpha=0.7,
                              label=f"{domain} ({pick.sum()})")
            for c, name in enumerate(classes):
                both = pick & (labels == c)
                by_class.scatter(*xy[both].T, s=12, color=class_colours(c), marker=markers[domain], alpha=0.7,
                                 label=name if domain == "target video" else None)
        by_domain.set_title(f"{title}: by domain", fontsize=10)
        by_class.set_title(f"{title}: by class (marker = domain)", fontsize=10)
        for ax in (by_domain, by_class):
            ax.set_xticks([])
            ax.set_yticks([])
        by_domain.legend(fontsize=7, loc="best")
        by_class.legend(fontsize=7, loc="best")
    return save_figure(fig, out_png)


def domain_agreement(features: torch.Tensor, domains: Sequence[str], k: int = 10) -> float:
    """Mean share of each point's ``k`` nearest neighbours (cosine) that come from its own domain.

    With equally many points per domain, fully mixed domains give about 1 / (number of
    domains) and fully separated ones 1.
    """
    x = torch.nn.functional.normalize(features.float(), dim=1)
    similarity = x @ x.T
    similarity.fill_diagonal_(-float("inf"))
    neighbours = similarity.topk(min(k, len(x) - 1), dim=1).indices
    codes = torch.tensor([sorted(set(domains)).index(d) for d in domains])
    return float((codes[neighbours] == codes[:, None]).float().mean())


def subsample(groups: Dict[str, List], per_group: int, seed: int = 0) -> Dict[str, List]:
    """At most ``per_group`` items of each group, drawn without replacement, in their original order."""
    rng = np.random.default_rng(seed)
    return {name: [items[i] for i in sorted(rng.permutation(len(items))[:per_group])] for name, items in groups.items()}
