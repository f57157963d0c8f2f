"""scikit-learn's 8x8 handwritten digits: the offline default dataset (1,797 images, 10 classes)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vitlab.data.splits import SplitsDataModule

NATIVE_SIZE = 8


class TensorImages(Dataset):
    """Images held in memory as one tensor, transformed per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class DigitsDataModule(SplitsDataModule):
    """Fixed stratified train/val/test split of the digits, standardised with train statistics.

    ``img_size`` upsamples the 8x8 digits (bilinear) for models that expect larger inputs; the
    train split gets a light random affine (small shifts, rotations and scalings).
    ``epoch_seed`` reseeds every RNG at each epoch's train loader (see ``epoch_seed``).
    """

    num_classes = 10
    in_chans = 1
    class_names = [str(digit) for digit in range(10)]

    def __init__(
        self,
        img_size: int = NATIVE_SIZE,
        in_chans: int = 1,
        num_classes: int = 10,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        augment: bool = True,
        num_workers: int = 0,
        epoch_seed: int | None = None,
    ):
        super().__init__(batch_size, num_workers, epoch_seed)
        if (in_chans, num_classes) != (self.in_chans, self.num_classes):
            raise ValueError(
                f"digits are {self.in_chans}-channel images of {self.num_classes} classes, "
                f"got in_chans={in_chans}, num_classes={num_classes}"
            )
        self.img_size = img_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.augment = augment

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        pixels, labels = load_digits(return_X_y=True)
        images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        labels = torch.tensor(labels)
        index = torch.arange(len(labels)).numpy()
        train_val, test = train_test_split(
            index, test_size=self.test_fraction, stratify=labels, random_state=self.split_seed
        )
        train, val = train_test_split(
            train_val,
            test_size=self.val_fraction / (1 - self.test_fraction),
            stratify=labels[train_val],
            random_state=self.split_seed,
        )
        if self.img_size != NATIVE_SIZE:
            images = v2.functional.resize(images, [self.img_size, self.img_size], antialias=True)
        normalize = v2.Normalize([images[train].mean().item()], [images[train].std().item()])
        augment = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
        train_transform = v2.Compose([augment, normalize]) if self.augment else normalize
        self.splits = {
            "train": TensorImages(images[train], labels[train], train_transform),
            "val": TensorImages(images[val], labels[val], normalize),
            "test": TensorImages(images[test], labels[test], normalize),
        }
