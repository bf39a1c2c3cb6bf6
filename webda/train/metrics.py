"""Training metrics: ``metrics.jsonl`` (one JSON record per line) and the running means of the
training step's terms that its ``train`` records hold.

Records: ``setup`` (step 0: classes, world size, branch sizes, web items dropped as overlap),
``train`` (every ``log_every`` steps: learning rate, gradient-reversal coefficient, seconds per
step and the mean of every scalar term of :meth:`webda.models.method.WebDAModel.forward` since
the previous record) and ``eval`` (top-1, per-class accuracy, confusion on the target test split).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, each with ``kind`` and ``step``."""

    def __init__(self, path: Path, enabled: bool, resume_step: Optional[int]):
        self.path, self.enabled = path, enabled
        if enabled and resume_step is not None and path.is_file():
            # Drop records of steps after the checkpoint: the resumed run writes them again.
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled:
            path.write_text("")

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


class RunningMetrics:
    """Sums of the training step's terms since the last :meth:`record`.

    Scalars are averaged as they are; a per-item term (the attention weights ``alpha/<b>``,
    (N_b,)) is kept as ``alpha_max_x_n/<b>``, how peaked it is (1 = uniform). ``labeled``: the
    labeled branches, whose ``acc/<b>`` make the progress bar's accuracy.
    """

    def __init__(self, labeled: Sequence[str]):
        self.labeled = tuple(labeled)
        self._reset()

    def _reset(self) -> None:
        self.sums: Dict[str, float] = defaultdict(float)
        self.count, self.tic = 0, time.perf_counter()

    def add(self, terms: Dict[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            if value.ndim == 0:
                self.sums[key] += float(value.detach())
            else:
                self.sums[f"alpha_max_x_n/{key.split('/')[1]}"] += float(value.max() * value.numel())
        self.count += 1

    def progress(self) -> Dict[str, str]:
        """Mean loss and web-label accuracy so far, formatted for the progress bar."""
        acc = sum(self.sums[f"acc/{b}"] for b in self.labeled) / (self.count * len(self.labeled))
        return {"loss": f"{self.sums['loss'] / self.count:.3f}", "acc": f"{acc:.2f}"}

    def record(self, step: int, **values) -> dict:
        """The ``train`` record of ``step`` (``values`` first, then seconds per step and the
        means), and a fresh start."""
        record = {"kind": "train", "step": step, **values,
                  "seconds_per_step": (time.perf_counter() - self.tic) / self.count,
                  **{k: v / self.count for k, v in self.sums.items()}}
        self._reset()
        return record
