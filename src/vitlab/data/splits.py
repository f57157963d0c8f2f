"""Loaders for a DataModule whose train/val/test datasets are built in ``setup``."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vitlab.data.epoch_seed import SeededShuffle, keep_workers, seed_epoch
from vitlab.data.named_classes import NamedClasses


class SplitsDataModule(NamedClasses, L.LightningDataModule):
    """Serves ``self.splits`` ("train", "val", "test"): full, shuffled train batches whose order
    and augmentation are seeded per epoch from ``epoch_seed`` (exact resume), plain val/test."""

    def __init__(self, batch_size: int, num_workers: int = 0, epoch_seed: int | None = None):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.epoch_seed = epoch_seed
        self.splits: dict[str, Dataset] = {}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        epoch_seed = seed_epoch(self.epoch_seed, self.trainer) if shuffle else None
        dataset = self.splits[split]
        sampler = SeededShuffle(len(dataset), epoch_seed) if epoch_seed is not None else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=keep_workers(True, self.num_workers, seeded=epoch_seed is not None),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
