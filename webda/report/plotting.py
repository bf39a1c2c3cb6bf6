"""matplotlib for the report's figures: the non-interactive Agg backend (chosen here, before
pyplot is first imported, so figures render without a display) and how a figure is saved."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, out_png) -> Path:
    """Lay ``fig`` out, write it to ``out_png`` and close it; returns the path."""
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return Path(out_png)
