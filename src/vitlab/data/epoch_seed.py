"""Seed every RNG from (seed, epoch) as an epoch's train loader is built.

The shuffle order, augmentations, dropout and drop path of an epoch then depend only on the
seed and the epoch number, not on how the process got there: a run killed mid-epoch and
resumed from its last (epoch-end) checkpoint replays that epoch exactly and ends with the same
weights as a run that was never interrupted.

Building the train loader is the one moment that precedes every draw of an epoch in both
cases: with ``reload_dataloaders_every_n_epochs=1`` (the trainer default here) Lightning builds
it at each epoch start, and a resumed process builds it once its loops are restored. Lifecycle
hooks do not work: a resumed process draws before any hook sees the restored epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler


def seed_epoch(seed: int | None, trainer: L.Trainer | None) -> int | None:
    """Reseed python, numpy and torch for the trainer's current epoch and rank, and return the
    epoch's shuffle seed for the train loader's ``SeededShuffle`` (None, and no reseeding,
    without a seed).

    The shuffle seed is the same on every rank: Lightning shards one order across data-parallel
    processes, and shards of different orders would overlap. The RNGs differ per rank, so that
    the processes draw different augmentations.
    """
    if seed is None:
        return None
    epoch = trainer.current_epoch if trainer is not None else 0
    rank = trainer.global_rank if trainer is not None else 0
    shuffle_seed = (seed * 1_000_003 + epoch * 1_009) % 2**32
    rng_seed = (shuffle_seed + 7_919 * rank) % 2**32
    random.seed(rng_seed)
    np.random.seed(rng_seed)
    torch.manual_seed(rng_seed)
    return shuffle_seed


def keep_workers(requested: bool, workers: int, seeded: bool) -> bool:
    """Whether a loader's worker processes should persist between its iterators: as
    ``requested`` when there are workers, but never for a seeded train loader. Lightning starts
    an epoch's iterator twice in an uninterrupted run and once in a resumed one; persistent
    workers would carry the first start's random draws into the second, out of the seed's reach.
    """
    return requested and workers > 0 and not seeded


class SeededShuffle(Sampler[int]):
    """A random order of ``range(size)`` fixed by ``seed``, the same each time it is iterated.

    Lightning starts an epoch's iterator twice in an uninterrupted run and once in a resumed
    one; a shuffle drawn from a running generator would differ between the two.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
