"""The base of every vitlab DataModule: splits, loaders, seeded epochs, and one batch contract.

A DataModule's constructor only records its arguments; ``setup`` reads the data (and raises a
``ValueError`` or ``FileNotFoundError`` that names what is missing). Subclasses say where the
images come from (``build_splits``) and how one image is prepared for evaluation
(``eval_transform``); everything between a dataset and a batch lives here.

The batch contract: the loaders yield images unnormalised (uint8, or float in [0, 1]);
``on_after_batch_transfer`` finishes every batch on its device with one batch step
(``BatchStep``: normalisation, and for training batches of the RGB data erasing and mixing).
After it every DataModule yields ``(images, targets)`` with ``images`` float32
``(B, C, H, W)``, normalised, on the batch's device, and ``targets`` class indices ``(B,)``
(soft ``(B, K)`` for mixed training batches), masks ``(B, H, W)`` or (detection) one
``{"boxes", "labels"}`` per image. ``predict_transform()`` takes an image as read from a file to one such
image, exactly as evaluation prepares it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from vitlab.data.epoch_seed import SeededShuffle, keep_workers, seed_epoch
from vitlab.data.multicrop import multi_crop_config
from vitlab.data.named_classes import NamedClasses
from vitlab.data.transforms import BatchStep, Normalize

SPLITS = ("train", "val", "test")
Batch = tuple[torch.Tensor, torch.Tensor]


def default_num_workers(processes_per_node: int = 1) -> int:
    """The CPUs this process may use, shared among the node's training processes, one left over."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(16, (cpus or 1) // processes_per_node - 1))


def carve_split(size: int, held_out: int, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random (kept, held-out) split of ``range(size)``, ``held_out`` indices held out:
    the same for every run and rank."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held_out:]), sorted(order[:held_out])


@dataclass(frozen=True)
class ImageSpec:
    """What the model sees: ``size`` x ``size`` images of ``channels`` channels, standardised
    with ``mean`` / ``std`` (per channel, in [0, 1] units) by the batch step."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}), "
                f"got {self.mean} and {self.std}"
            )
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))

    def normalize(self) -> Normalize:
        return Normalize(self.mean, self.std)

    def normalize_step(self) -> dict[str, Any]:
        """The normalisation as a step of an export's ``preprocessing``."""
        return {"op": "normalize", "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class LoaderSettings:
    """How the loaders batch and load: ``batch_size`` per process; ``num_workers`` null picks
    one from the CPU count, ``pin_memory`` null pins when CUDA is available;
    ``persistent_workers`` keeps the evaluation loaders' workers between epochs."""

    batch_size: int
    num_workers: int | None
    pin_memory: bool | None
    persistent_workers: bool

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"batch_size: expected a whole number of at least 1, got {self.batch_size!r}"
            )

    def pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else self.pin_memory


class SplitsDataModule(NamedClasses, L.LightningDataModule):
    """Serves ``self.splits`` ("train", "val", "test", filled by ``setup``): full, shuffled train
    batches whose order and augmentation are seeded per epoch from ``epoch_seed`` (exact resume),
    plain val/test batches, and the batch step that finishes every batch on its device.

    The arguments every DataModule shares are keyword arguments here only (a subclass passes
    them on with ``**shared``), grouped as the code uses them: ``image`` (an ``ImageSpec`` of
    ``img_size``, ``in_chans``, ``mean``, ``std``) and ``loading`` (``LoaderSettings``:
    ``batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``). ``num_classes``
    is what the targets count (null: read from the data). ``augment`` false trains on the
    evaluation preprocessing (no augmentation, no mixing). ``multi_crop`` (a
    ``MultiCropConfig``) makes each training sample a list of views (``vitlab.data.multicrop``;
    the self-distillation tasks train on them).
    """

    def __init__(
        self,
        *,
        img_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int | None,
        batch_size: int,
        num_workers: int | None = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        augment: bool = True,
        epoch_seed: int | None = None,
        multi_crop: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.image = ImageSpec(img_size, in_chans, mean, std)
        self.loading = LoaderSettings(batch_size, num_workers, pin_memory, persistent_workers)
        self.num_classes = num_classes
        self.augment = augment
        self.epoch_seed = epoch_seed
        self.multi_crop = multi_crop_config(multi_crop)
        self.splits: dict[str, Dataset] = {}
        self.batch_step: BatchStep | None = None

    @property
    def batch_size(self) -> int:
        """Lightning's name for the per-process batch (its tuner and the tasks read it)."""
        return self.loading.batch_size

    def build_splits(self) -> dict[str, Dataset]:
        """The train, val and test datasets."""
        raise NotImplementedError

    def eval_transform(self) -> Callable:
        """What evaluation does to one image as the datasets read it (before batching and the
        batch step's normalisation)."""
        raise NotImplementedError

    def read_image(self, image: Image.Image) -> torch.Tensor | Image.Image:
        """An image file's contents (any size and mode) as the datasets hold an image."""
        raise NotImplementedError

    def predict_geometry(self) -> Callable:
        """What ``predict_transform`` does between ``read_image`` and normalisation."""
        return self.eval_transform()

    def predict_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """An image file's contents (any size; PIL) to one model input ``(C, H, W)``, prepared
        exactly as evaluation prepares an image: ``read_image``, the evaluation geometry and the
        batch step's normalisation."""
        geometry, normalize = self.predict_geometry(), self.image.normalize()
        return lambda image: normalize(geometry(self.read_image(image)))

    def preprocessing(self) -> list[dict[str, Any]]:
        """``predict_transform`` as the documented steps of an export's ``config.json`` (see
        ``vitlab.export``), for consumers without vitlab's code."""
        raise NotImplementedError

    def make_batch_step(self) -> BatchStep:
        """The batch step (normalisation only here), built once the data is read."""
        return BatchStep(self.image.mean, self.image.std)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.build_splits()
            # after the splits: the class count may come from the data
            self.batch_step = self.make_batch_step()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Every batch, on its device: ``batch_step`` (normalisation; for the RGB data also
        erasing and mixing of training batches)."""
        if isinstance(batch, torch.Tensor):
            # the model summary's example input: images as the model takes them already
            return batch
        training = self.trainer is not None and self.trainer.training
        return self.batch_step(batch, train=training)

    def dataset_sizes(self) -> dict[str, int]:
        return {split: len(dataset) for split, dataset in self.splits.items()}

    def batch_shape(self) -> tuple[int, int, int, int]:
        """The shape of a batch of images as the model sees it."""
        return (self.loading.batch_size, self.image.channels, self.image.size, self.image.size)

    def train_sampler(self, shuffle_seed: int | None) -> Sampler | None:
        """The epoch's seeded shuffle (None without a seed: a plain shuffle); Lightning shards it
        under DDP."""
        if shuffle_seed is None:
            return None
        return SeededShuffle(len(self.splits["train"]), shuffle_seed)

    def collate(self, samples: list[Any]) -> Any:
        return default_collate(samples)

    def loader_workers(self) -> int:
        if self.loading.num_workers is not None:
            return self.loading.num_workers
        return default_num_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def loader(self, split: str, sampler: Sampler | None = None, train: bool = False) -> DataLoader:
        workers = self.loader_workers()
        return DataLoader(
            self.splits[split],
            batch_size=self.loading.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # MixUp/CutMix need full batches
            drop_last=train,
            collate_fn=self.collate,
            num_workers=workers,
            pin_memory=self.loading.pin(),
            persistent_workers=keep_workers(
                self.loading.persistent_workers,
                workers,
                seeded=train and self.epoch_seed is not None,
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
            batch_size=self.loading.batch_size,
            collate_fn=self.collate,
            num_workers=self.loader_workers(),
            pin_memory=self.loading.pin(),
        )

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
