"""The base of every vitlab DataModule: splits, loaders, seeded epochs, and one batch contract.

A DataModule's constructor only records its arguments; ``setup`` reads the data (and raises a
``ValueError`` or ``FileNotFoundError`` that names what is missing). Subclasses say where the
images come from (``build_splits``) and how one image is prepared for evaluation
(``eval_transform``); everything between a dataset and a batch lives here.

The batch contract: after ``on_after_batch_transfer``, every DataModule yields
``(images, targets)`` with ``images`` float32 ``(B, C, H, W)``, normalised, on the batch's
device, and ``targets`` class indices ``(B,)`` (soft ``(B, K)`` for mixed training batches) or
masks ``(B, H, W)``. ``predict_transform()`` takes an image as read from a file to one such
image, exactly as evaluation prepares it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from vitlab.data.epoch_seed import SeededShuffle, keep_workers, seed_epoch
from vitlab.data.multicrop import multi_crop_config
from vitlab.data.named_classes import NamedClasses

SPLITS = ("train", "val", "test")
Batch = tuple[torch.Tensor, torch.Tensor]


def default_num_workers(processes_per_node: int = 1) -> int:
    """The CPUs this process may use, shared among the node's training processes, one left over."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(16, (cpus or 1) // processes_per_node - 1))


def carve_split(size: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random (kept, held-out) split of ``range(size)``: the same for every run and rank."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = round(size * fraction)
    return sorted(order[held_out:]), sorted(order[:held_out])


class SplitsDataModule(NamedClasses, L.LightningDataModule):
    """Serves ``self.splits`` ("train", "val", "test", filled by ``setup``): full, shuffled train
    batches whose order and augmentation are seeded per epoch from ``epoch_seed`` (exact resume),
    plain val/test batches.

    ``img_size``, ``in_chans`` and ``num_classes`` describe what the model sees; ``mean`` and
    ``std`` standardise it. ``augment`` false trains on the evaluation preprocessing (no
    augmentation, no mixing). ``multi_crop`` (a ``MultiCropConfig``) makes each training sample
    a list of views (``vitlab.data.multicrop``; the self-distillation tasks train on them). ``num_workers`` null picks one from the CPU count, ``pin_memory``
    null pins when CUDA is available.
    """

    def __init__(
        self,
        img_size: int,
        in_chans: int,
        num_classes: int | None,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = True,
        num_workers: int | None = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        epoch_seed: int | None = None,
        multi_crop: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"batch_size: expected a whole number of at least 1, got {batch_size!r}"
            )
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"mean and std need one value per channel ({in_chans}), got {mean} and {std}"
            )
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.epoch_seed = epoch_seed
        self.multi_crop = multi_crop_config(multi_crop)
        self.splits: dict[str, Dataset] = {}

    def build_splits(self) -> dict[str, Dataset]:
        """The train, val and test datasets."""
        raise NotImplementedError

    def eval_transform(self) -> Callable:
        """What evaluation does to one image as the datasets read it (before batching)."""
        raise NotImplementedError

    def predict_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """An image file's contents (any size; PIL) to one model input ``(C, H, W)``, prepared
        exactly as evaluation prepares an image: the DataModule's ``eval_transform`` and what
        ``on_after_batch_transfer`` does to an evaluation batch."""
        raise NotImplementedError

    def preprocessing(self) -> list[dict[str, Any]]:
        """``predict_transform`` as the documented steps of an export's ``config.json`` (see
        ``vitlab.export``), for consumers without vitlab's code."""
        raise NotImplementedError

    def normalize_step(self) -> dict[str, Any]:
        return {"op": "normalize", "mean": list(self.mean), "std": list(self.std)}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.build_splits()

    def dataset_sizes(self) -> dict[str, int]:
        return {split: len(dataset) for split, dataset in self.splits.items()}

    def batch_shape(self) -> tuple[int, int, int, int]:
        """The shape of a batch of images as the model sees it."""
        return (self.batch_size, self.in_chans, self.img_size, self.img_size)

    def train_sampler(self, shuffle_seed: int | None) -> Sampler | None:
        """The epoch's seeded shuffle (None without a seed: a plain shuffle); Lightning shards it
        under DDP."""
        if shuffle_seed is None:
            return None
        return SeededShuffle(len(self.splits["train"]), shuffle_seed)

    def collate(self, samples: list[Any]) -> Any:
        return default_collate(samples)

    def loader_workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return default_num_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def loader(self, split: str, sampler: Sampler | None = None, train: bool = False) -> DataLoader:
        workers = self.loader_workers()
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # MixUp/CutMix need full batches
            drop_last=train,
            collate_fn=self.collate,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=keep_workers(
                self.persistent_workers, workers, seeded=train and self.epoch_seed is not None
            ),
        )

    def train_dataloader(self) -> DataLoader:
        # every RNG is reseeded from (epoch_seed, epoch) here, the one moment that precedes all
        # of an epoch's draws in a fresh and in a resumed run alike (see vitlab.data.epoch_seed)
        shuffle_seed = seed_epoch(self.epoch_seed, self.trainer)
        return self.loader("train", self.train_sampler(shuffle_seed), train=True)

    def train_eval_dataloader(self) -> DataLoader:
        """The train split in order, with the evaluation preprocessing: e.g. the feature bank of
        a k-NN monitor. Datasets keep their per-sample ``transform`` as an attribute (that of
        the dataset a ``Subset`` holds out of), replaced here in a shallow copy."""
        dataset = copy.copy(self.splits["train"])
        if isinstance(dataset, Subset):
            dataset.dataset = copy.copy(dataset.dataset)
            dataset.dataset.transform = self.eval_transform()
        else:
            dataset.transform = self.eval_transform()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            collate_fn=self.collate,
            num_workers=self.loader_workers(),
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
