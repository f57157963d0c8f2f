"""Reseed every RNG from (seed, epoch) right before each epoch's training data is drawn.

The shuffle order, augmentations, dropout and drop path of an epoch then depend only on the
seed and the epoch number, not on how the process got there: a run killed mid-epoch and
resumed from its last (epoch-end) checkpoint replays that epoch exactly and ends with the same
weights as a run that was never interrupted (with ``num_workers=0`` or non-persistent workers).

Lightning creates the first epoch's train iterator (and prefetches a batch) before
``on_train_epoch_start``, after the sanity check, which itself draws from the RNG; later
epochs create it after ``on_train_epoch_start``. So the first epoch of a process is seeded at
fit start and again once the sanity check is done, and every later epoch at its start.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


class EpochSeed(L.Callback):
    def __init__(self, seed: int | None):
        self.seed = seed
        self.seeded_epoch: int | None = None

    def reseed(self, epoch: int) -> None:
        if self.seed is None:
            return
        epoch_seed = (self.seed * 1_000_003 + epoch) % 2**32
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        self.seeded_epoch = epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer.current_epoch)

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seeded_epoch != trainer.current_epoch:
            self.reseed(trainer.current_epoch)
