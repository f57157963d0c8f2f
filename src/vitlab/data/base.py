"""Shared DataModule for RGB image classification: transforms, loaders, sampling, mixing.

Subclasses (image folders, ImageNet, CIFAR) only say where the images come from, by
implementing ``build_splits``; everything between a decoded image and a batch lives here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vitlab.data.epoch_seed import SeededShuffle, keep_workers, seed_epoch
from vitlab.data.named_classes import NamedClasses
from vitlab.data.sampler import RepeatedAugSampler
from vitlab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchStep,
    build_eval_transform,
    build_train_transform,
    collate_present,
)

SPLITS = ("train", "val", "test")


def default_num_workers(processes_per_node: int = 1) -> int:
    """The CPUs this process may use, shared among the node's training processes, one left over."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(16, (cpus or 1) // processes_per_node - 1))


def carve_split(size: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random (kept, held-out) split of ``range(size)``: the same for every run and rank."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = round(size * fraction)
    return sorted(order[held_out:]), sorted(order[:held_out])


class ImageDataModule(NamedClasses, L.LightningDataModule):
    """Base for RGB classification data.

    Loaders yield uint8 images; ``on_after_batch_transfer`` normalises them on the device they
    were moved to and mixes training batches (``BatchStep``).

    ``train_transform`` configures the train augmentation (see ``build_train_transform``),
    ``mix`` the batch-level MixUp/CutMix (see ``BatchMix``; null disables it),
    ``repeated_aug`` > 1 the repeated-augmentation sampler. ``num_workers`` null picks one from
    the CPU count, ``pin_memory`` null pins when CUDA is available. ``epoch_seed`` reseeds every
    RNG at each epoch's train loader, so resumed runs replay their epochs exactly.
    """

    def __init__(
        self,
        img_size: int,
        num_classes: int,
        in_chans: int = 3,
        batch_size: int = 128,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        train_transform: Mapping[str, Any] | None = None,
        eval_crop_pct: float = 0.875,
        mix: Mapping[str, float] | None = None,
        repeated_aug: int = 1,
        fast_path: bool = True,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        epoch_seed: int | None = None,
    ):
        super().__init__()
        if in_chans != 3:
            raise ValueError(
                f"{type(self).__name__} yields RGB images: in_chans must be 3, got {in_chans}"
            )
        self.img_size = img_size
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_transform_cfg = dict(train_transform or {})
        self.eval_crop_pct = eval_crop_pct
        self.batch_step = BatchStep(self.mean, self.std, num_classes, mix)
        self.repeated_aug = repeated_aug
        self.fast_path = fast_path
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed
        self.epoch_seed = epoch_seed
        self.splits: dict[str, Dataset] = {}

    def build_splits(
        self, train_transform: Callable, eval_transform: Callable
    ) -> dict[str, Dataset]:
        """The train, val and test datasets, with these transforms applied per sample."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_transform = build_train_transform(
            self.img_size, self.mean, fast=self.fast_path, **self.train_transform_cfg
        )
        eval_transform = build_eval_transform(self.img_size, self.eval_crop_pct, self.fast_path)
        self.splits = self.build_splits(train_transform, eval_transform)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        training = self.trainer is not None and self.trainer.training
        return self.batch_step(batch, train=training)

    def train_sampler(self) -> Sampler | None:
        """Repeated augmentation when asked; else the epoch's seeded shuffle when ``epoch_seed``
        is set; else None (a plain shuffle). Lightning shards the latter two under DDP."""
        epoch_seed = seed_epoch(self.epoch_seed, self.trainer)
        if self.repeated_aug > 1:
            return RepeatedAugSampler(
                self.splits["train"], repeats=self.repeated_aug, seed=self.seed
            )
        if epoch_seed is not None:
            return SeededShuffle(len(self.splits["train"]), epoch_seed)
        return None

    def loader_workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return default_num_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def _loader(self, split: str, train: bool) -> DataLoader:
        workers = self.loader_workers()
        sampler = self.train_sampler() if train else None
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # MixUp/CutMix need full batches
            drop_last=train,
            collate_fn=collate_present,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=keep_workers(
                self.persistent_workers, workers, seeded=train and self.epoch_seed is not None
            ),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
