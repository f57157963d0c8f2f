"""Zalando's Fashion-MNIST: 60,000 train + 10,000 test 28x28 grayscale images of 10 kinds of
clothing, read from its four IDX files (``.gz`` or plain) into memory as uint8 tensors (47 MB).

Debian's package ``dataset-fashion-mnist`` installs the files in ``DEBIAN_ROOT``, which
``conf/data/fashion_mnist.yaml`` takes for ``root`` when it exists; ``download`` fetches them
from torchvision's FashionMNIST mirrors instead. The training augmentation runs on whole
batches on their device (``BatchResizedCrop``, ``RandomErasing``): per sample, a training image
is only indexed out of the tensor.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST
from torchvision.datasets.utils import download_url
from torchvision.transforms import v2

from vitlab.data.base import SplitsDataModule, carve_split
from vitlab.data.digits import TensorImages
from vitlab.data.multicrop import crop_views
from vitlab.data.transforms import ERASE_KEYS, BatchResizedCrop, BatchStep, build_erasing

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
NATIVE_SIZE = 28
# the IDX files of each split: images, labels
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# the IDX type codes of the element types a file may hold
IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """An IDX file (LeCun's MNIST format; gzip-compressed when its name ends in ``.gz``) as a
    tensor: two zero bytes, the element type, the number of dimensions, each dimension as a
    big-endian int32, then the elements in row-major order."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(np.frombuffer(data, ">i4", count=ndim, offset=4))
    values = np.frombuffer(data, IDX_TYPES[data[2]], offset=4 + 4 * ndim)
    if values.size != np.prod(shape):
        raise ValueError(f"{path}: {values.size} values for the shape {shape}")
    return torch.from_numpy(values.astype(values.dtype.newbyteorder("="))).reshape(shape)


def idx_path(root: Path, name: str) -> Path | None:
    """``<root>/<name>`` or ``<root>/<name>.gz``, whichever exists."""
    for path in (root / name, root / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def download_files(root: Path) -> None:
    """The four gzipped IDX files from torchvision's FashionMNIST mirrors into ``root`` (each
    checked against its md5)."""
    for filename, md5 in FashionMNIST.resources:
        errors = []
        for mirror in FashionMNIST.mirrors:
            try:
                download_url(f"{mirror}{filename}", root, filename, md5)
                break
            except (URLError, OSError, RuntimeError) as error:
                errors.append(f"{mirror}: {error}")
        else:
            raise FileNotFoundError(f"could not download {filename} ({'; '.join(errors)})")


class FashionMNISTDataModule(SplitsDataModule):
    """Fashion-MNIST in ``root``: the official 10,000 test images, ``val_size`` images of the
    official train split held out for validation (fixed by ``split_seed``), the rest trained on.

    The loaders yield uint8 images (resized to ``img_size`` when it is not 28); with
    ``augment``, the batch step crops and flips each training batch at once and erases boxes
    in it: ``train_transform`` holds ``scale``, ``ratio``, ``hflip`` (``BatchResizedCrop``) and
    ``erase_prob``, ``erase_mode`` (``build_erasing``). Evaluation batches are only normalised.
    ``multi_crop`` trains on crop views instead (``crop_views``). ``download`` fetches missing
    files into ``root`` (on one process per node).
    """

    class_names = list(FashionMNIST.classes)

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        download: bool,
        val_size: int,
        split_seed: int,
        train_transform: Mapping[str, Any],
        **shared: Any,
    ):
        super().__init__(**shared)
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed
        self.crop_cfg = {k: v for k, v in train_transform.items() if k not in ERASE_KEYS}
        self.erase_cfg = {k: v for k, v in train_transform.items() if k in ERASE_KEYS}

    def missing_files(self) -> list[str]:
        return [
            name for pair in FILES.values() for name in pair if idx_path(self.root, name) is None
        ]

    def missing_message(self) -> str:
        return (
            f"no Fashion-MNIST IDX files {', '.join(self.missing_files())} (.gz or plain) in "
            f"{self.root}: install them with `apt-get install dataset-fashion-mnist` (they land "
            f"in {DEBIAN_ROOT}, the default data.root) or set data.download=true"
        )

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node: the only place that writes files
        if self.download and self.missing_files():
            try:
                download_files(self.root)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"{error}; {self.missing_message()}") from None

    def read_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (N, 1, 28, 28) uint8, labels (N,) int64) of the official split."""
        images, labels = (read_idx(idx_path(self.root, name)) for name in FILES[split])
        return images.unsqueeze(1), labels.long()

    def build_splits(self) -> dict[str, Dataset]:
        if self.missing_files():
            raise FileNotFoundError(self.missing_message())
        images, labels = self.read_split("train")
        kept, held_out = carve_split(len(labels), self.val_size, self.split_seed)
        test_images, test_labels = self.read_split("test")
        evaluate = self.eval_transform()
        return {
            "train": TensorImages(images[kept], labels[kept], self.train_transform()),
            "val": TensorImages(images[held_out], labels[held_out], evaluate),
            "test": TensorImages(test_images, test_labels, evaluate),
        }

    def eval_transform(self) -> Callable:
        """A uint8 (1, 28, 28) image as evaluation sees it: as it is, or resized to ``img_size``
        (bilinear, antialiased)."""
        size = self.image.size
        if size == NATIVE_SIZE:
            return nn.Identity()  # a call costs 40 times less than a v2.Resize that does nothing
        return v2.Resize([size, size], antialias=True)

    def train_transform(self) -> Callable:
        """Per sample: crop views with ``multi_crop``, else nothing (the batch step augments)."""
        if self.multi_crop is not None:
            return crop_views(self.image.size, self.multi_crop)
        return nn.Identity() if self.augment else self.eval_transform()

    def make_batch_step(self) -> BatchStep:
        if not self.augment or self.multi_crop is not None:
            return super().make_batch_step()
        crop = BatchResizedCrop(self.image.size, **self.crop_cfg)
        erase = build_erasing(**self.erase_cfg)
        return BatchStep(self.image.mean, self.image.std, crop=crop, erase=erase)

    def read_image(self, image: Image.Image) -> torch.Tensor:
        """Grayscale at the dataset's 28x28 (bilinear, antialiased), as its images are."""
        gray = v2.functional.pil_to_tensor(image.convert("L"))
        return v2.functional.resize(gray, [NATIVE_SIZE, NATIVE_SIZE], antialias=True)
