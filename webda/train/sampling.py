"""Step-indexed batches: the batch of every branch at step k is a pure function of (seed, k).

Each branch draws indices from successive epochs of a :class:`DistributedSampler`
permutation (this rank's share, reshuffled per epoch with ``set_epoch``), and every sample
gets its own seed for its random crop and chunk offset. So the data-sampler state of a run is
its step counter: a resumed run (``--resume``) sees exactly the batches an uninterrupted run
would have, whatever the number of loader workers.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class BranchSampler:
    """Indices of this rank's ``batch_size`` items at any step, over a dataset of ``size`` items."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if size < world_size:
            raise ValueError(f"a dataset of {size} items cannot be shared by {world_size} processes")
        self.batch_size = batch_size
        self._epochs = DistributedSampler(
            range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self._per_epoch = len(self._epochs)
        self._cache: Tuple[int, List[int]] = (-1, [])

    def _epoch(self, epoch: int) -> List[int]:
        if self._cache[0] != epoch:
            self._epochs.set_epoch(epoch)
            self._cache = (epoch, list(self._epochs))
        return self._cache[1]

    def batch(self, step: int) -> List[int]:
        positions = range(step * self.batch_size, (step + 1) * self.batch_size)
        return [self._epoch(p // self._per_epoch)[p % self._per_epoch] for p in positions]


def sample_seed(seed: int, branch: int, rank: int, step: int, slot: int) -> int:
    """Seed of the random augmentation of one sample (independent of loader workers)."""
    return int(np.random.SeedSequence([seed, branch, rank, step, slot]).generate_state(1)[0])


class StepBatches(Dataset):
    """``dataset[step]`` -> ``{branch: (x (B, ...), labels (B,), item indices (B,))}``.

    ``branches``: ``{name: (dataset, sampler)}``; each dataset returns ``(x, label, index)``
    and draws its randomness from torch's global generator, which is seeded per sample here.
    Use with ``DataLoader(StepBatches(...), batch_size=None, sampler=range(start, steps))``.
    """

    def __init__(self, branches: Dict[str, Tuple[Dataset, BranchSampler]], seed: int, rank: int = 0):
        self.branches, self.seed, self.rank = branches, seed, rank

    def __len__(self) -> int:
        raise TypeError("StepBatches is indexed by step; pass an explicit sampler such as range(start, steps)")

    def __getitem__(self, step: int):
        out = {}
        for b, (name, (dataset, sampler)) in enumerate(self.branches.items()):
            samples = []
            for slot, index in enumerate(sampler.batch(step)):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(sample_seed(self.seed, b, self.rank, step, slot))
                    samples.append(dataset[index])
            xs, labels, indices = zip(*samples)
            out[name] = (torch.stack(xs), torch.tensor(labels), torch.tensor(indices))
        return out
