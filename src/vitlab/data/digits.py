"""scikit-learn's 8x8 handwritten digits: the offline default dataset (1,797 images, 10 classes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vitlab.data.base import SplitsDataModule
from vitlab.data.multicrop import crop_views

NATIVE_SIZE = 8
# pixel statistics of the train split (seed 0), in [0, 1]
DIGITS_MEAN, DIGITS_STD = (0.3049,), (0.3758,)


class TensorImages(Dataset):
    """Images held in memory as one tensor, transformed per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class DigitsDataModule(SplitsDataModule):
    """Fixed stratified train/val/test split of the digits, grayscale in [0, 1] (the batch
    step standardises them with ``mean``/``std``).

    ``img_size`` resizes the 8x8 digits (bilinear, antialiased) for models that expect other
    inputs; with ``augment`` the train split gets a light random affine (small shifts, rotations
    and scalings), with ``multi_crop`` random resized crops instead (``crop_views``).
    ``epoch_seed`` reseeds every RNG at each epoch's train loader (see
    ``vitlab.data.epoch_seed``).
    """

    class_names = [str(digit) for digit in range(10)]

    def __init__(
        self,
        *,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        img_size: int = NATIVE_SIZE,
        in_chans: int = 1,
        num_classes: int = 10,
        mean: Sequence[float] = DIGITS_MEAN,
        std: Sequence[float] = DIGITS_STD,
        batch_size: int = 64,
        **shared: Any,
    ):
        if (in_chans, num_classes) != (1, 10):
            raise ValueError(
                "digits are 1-channel images of 10 classes, "
                f"got in_chans={in_chans}, num_classes={num_classes}"
            )
        super().__init__(
            img_size=img_size,
            in_chans=in_chans,
            num_classes=num_classes,
            mean=mean,
            std=std,
            batch_size=batch_size,
            **shared,
        )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def eval_transform(self) -> v2.Resize:
        """Grayscale in [0, 1], (1, H, W), of any size: resized to ``img_size``."""
        size = self.image.size
        return v2.Resize([size, size], antialias=True)

    def train_transform(self) -> Callable:
        if self.multi_crop is not None:
            # crops resized to their size: colour jitter means nothing here
            return crop_views(self.image.size, self.multi_crop)
        if not self.augment:
            return self.eval_transform()
        augment = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
        return v2.Compose([augment, self.eval_transform()])

    def read_image(self, image: Image.Image) -> torch.Tensor:
        """Grayscale, box-averaged (area) to the digits' native 8x8 grid, which is how the digits
        were made (block averages of 32x32 bitmaps), so that a digit upscaled by a whole factor
        comes back exactly; in [0, 1]."""
        native = image.convert("L").resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.BOX)
        gray = v2.functional.pil_to_tensor(native)
        return v2.functional.to_dtype(gray, torch.float32, scale=True)

    def preprocessing(self) -> list[dict[str, Any]]:
        size = self.image.size
        return [
            {"op": "convert", "mode": "L"},
            {"op": "resize", "size": [NATIVE_SIZE, NATIVE_SIZE], "interpolation": "box"},
            {"op": "to_tensor"},
            {"op": "scale"},
            {"op": "resize", "size": [size, size], "interpolation": "bilinear"},
            self.image.normalize_step(),
        ]

    def build_splits(self) -> dict[str, Dataset]:
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
        eval_transform = self.eval_transform()
        return {
            "train": TensorImages(images[train], labels[train], self.train_transform()),
            "val": TensorImages(images[val], labels[val], eval_transform),
            "test": TensorImages(images[test], labels[test], eval_transform),
        }
