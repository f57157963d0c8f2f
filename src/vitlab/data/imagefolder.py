"""Image-folder trees (``<root>/<split>/<class>/<image>``) and ImageNet stored that way."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch.utils.data import Dataset

from vitlab.data.base import carve_split
from vitlab.data.decode import DECODE_ERRORS, decode_image, is_image, load_image
from vitlab.data.rgb import ImageDataModule
from vitlab.data.transforms import min_decode_side

log = logging.getLogger(__name__)

# ImageNet's "<wnid> <names>" lines (as distributed on Kaggle); any tree may carry one
CLASS_NAMES_FILE = "LOC_synset_mapping.txt"
Sample = tuple[str, int]


def has_image(folder: Path) -> bool:
    return any(entry.is_file() and is_image(entry.name) for entry in os.scandir(folder))


def layout_message(root: Path, splits: tuple[str, ...]) -> str:
    folders = splits[0] if len(splits) == 1 else "{" + ",".join(splits) + "}"
    return (
        f"expected {root}/{folders}/<class>/<image> (JPEG, PNG, ...); set data.root to such a tree"
    )


def class_folders(split_dir: Path) -> tuple[list[str], int]:
    """Sorted class folder names holding at least one image, and the number of empty ones."""
    folders = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    classes = [name for name in folders if has_image(split_dir / name)]
    return classes, len(folders) - len(classes)


def scan_split(split_dir: Path, classes: list[str]) -> tuple[list[Sample], int]:
    """(path, label) of every image under ``<split_dir>/<class>/``, and the count of other files."""
    samples, skipped = [], 0
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
            if entry.is_file() and is_image(entry.name):
                samples.append((entry.path, label))
            else:
                skipped += 1
    return samples, skipped


class ImageFiles(Dataset):
    """Labelled image files, decoded by ``decode`` (a path to a PIL image or uint8 tensor) and
    transformed per sample.

    A file that does not decode is named in a warning and yields ``None`` (the collate drops it)
    when ``on_corrupt="skip"``, or raises when ``on_corrupt="raise"``.
    """

    def __init__(
        self,
        samples: list[Sample],
        transform: Callable,
        decode: Callable[[str], torch.Tensor | Image.Image] = load_image,
        on_corrupt: Literal["skip", "raise"] = "skip",
    ):
        self.samples, self.transform = samples, transform
        self.decode, self.on_corrupt = decode, on_corrupt

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[index]
        try:
            image = self.decode(path)
        except DECODE_ERRORS as error:
            if self.on_corrupt == "raise":
                raise OSError(f"cannot decode image {path}: {error}") from error
            warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=2)
            return None
        return self.transform(image), label


class ImageFolderDataModule(ImageDataModule):
    """Any ``<root>/train/<class>/<image>`` tree; classes are the train folders that hold images.

    val: ``<root>/val`` when present, else ``val_fraction`` of train held out (fixed by ``seed``).
    test: ``<root>/test`` when present, else the val split. ``num_classes`` null reads the count
    from the tree; a number is checked against it. Stray non-image files and empty class folders
    are skipped and counted in the log. ``fast_path`` decodes with ``decode_image`` and
    crops, resizes and augments tensors; false is plain PIL decoding and PIL transforms.
    """

    name = "imagefolder"
    required_splits: tuple[str, ...] = ("train",)

    def __init__(
        self,
        root: str | os.PathLike,
        img_size: int,
        num_classes: int | None = None,
        val_fraction: float = 0.1,
        on_corrupt: Literal["skip", "raise"] = "skip",
        **kwargs: Any,
    ):
        if on_corrupt not in ("skip", "raise"):
            raise ValueError(f"on_corrupt must be 'skip' or 'raise', got {on_corrupt!r}")
        super().__init__(img_size=img_size, num_classes=num_classes, **kwargs)
        self.root = Path(root).expanduser()
        self.val_fraction = val_fraction
        self.on_corrupt = on_corrupt
        self.classes: list[str] = []

    def read_classes(self) -> None:
        """The class folders of train/ (checked against ``num_classes`` when it is given), with
        their names; a clear error for a tree that is not one."""
        for split in self.required_splits:
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"{self.name}: no directory {self.root / split}; "
                    + layout_message(self.root, self.required_splits)
                )
        self.classes, empty = class_folders(self.root / "train")
        if not self.classes:
            raise FileNotFoundError(
                f"{self.name}: no class folder with images in {self.root / 'train'}; "
                + layout_message(self.root, ("train",))
            )
        if empty:
            log.warning(
                "%s: skipped %d empty class folder(s) in %s", self.name, empty, self.root / "train"
            )
        if self.num_classes is not None and self.num_classes != len(self.classes):
            raise ValueError(
                f"{self.name}: data.num_classes={self.num_classes} but {self.root / 'train'} has "
                f"{len(self.classes)} class folders with images (num_classes: null reads it from the tree)"
            )
        if not (self.root / "val").is_dir() and not 0 < self.val_fraction < 1:
            raise ValueError(
                f"{self.name}: {self.root} has no val/ folder, so val_fraction must be in (0, 1) "
                f"to hold out part of train; got {self.val_fraction}"
            )
        self.num_classes = len(self.classes)
        self.class_names = read_class_names(self.root / CLASS_NAMES_FILE, self.classes)

    def scan(self, split: str) -> list[Sample]:
        samples, skipped = scan_split(self.root / split, self.classes)
        if skipped:
            log.warning(
                "%s: skipped %d non-image file(s) in %s", self.name, skipped, self.root / split
            )
        return samples

    def build_rgb_splits(
        self, train_transform: Callable, eval_transform: Callable
    ) -> dict[str, Dataset]:
        self.read_classes()
        train = self.scan("train")
        has_val, has_test = (self.root / "val").is_dir(), (self.root / "test").is_dir()
        if has_val:
            val = self.scan("val")
        else:
            kept, held_out = carve_split(
                len(train), round(len(train) * self.val_fraction), self.seed
            )
            train, val = [train[i] for i in kept], [train[i] for i in held_out]
        test = self.scan("test") if has_test else val
        log.debug(
            "%s: %d train, %d val, %d test images", self.name, len(train), len(val), len(test)
        )

        def files(samples: list[Sample], transform: Callable) -> ImageFiles:
            decode = load_image
            if self.fast_path:
                decode = functools.partial(decode_image, min_side=min_decode_side(transform))
            return ImageFiles(samples, transform, decode, self.on_corrupt)

        return {
            "train": files(train, train_transform),
            "val": files(val, eval_transform),
            "test": files(test, eval_transform),
        }


class ImageNetDataModule(ImageFolderDataModule):
    """ILSVRC-2012 as ``<root>/{train,val}/<wnid>/*.JPEG``: 1000 classes, tested on val.

    ``class_names`` are read from ``<root>/LOC_synset_mapping.txt`` when present, else the wnids.
    """

    name = "imagenet"
    required_splits = ("train", "val")

    def __init__(
        self, root: str | os.PathLike, img_size: int, num_classes: int = 1000, **kwargs: Any
    ):
        super().__init__(root, img_size, num_classes=num_classes, **kwargs)


def read_class_names(path: Path, classes: list[str]) -> list[str]:
    """Human-readable names from ``<folder> <name>`` lines, falling back to the folder names."""
    if not path.is_file():
        return list(classes)
    names = dict(
        line.strip().partition(" ")[::2] for line in path.read_text().splitlines() if line.strip()
    )
    return [names.get(folder) or folder for folder in classes]
