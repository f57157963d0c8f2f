"""Semantic segmentation data: image/mask PNG pairs, and a generated digit-canvas dataset.

Layout read by ``SegmentationDataModule``::

    <root>/{train,val,test}/images/<stem>.png
    <root>/{train,val,test}/masks/<stem>.png    one channel, pixel value = class index

``write_digit_canvas`` writes such a tree offline: scikit-learn digits pasted on blank
canvases, the mask marking each digit's bright pixels with its class + 1 (0 is background).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vitlab.data.base import SPLITS
from vitlab.data.splits import SplitsDataModule

DIGIT_SIZE = 16  # the 8x8 digits, each pixel repeated 2x2
# a digit pixel belongs to the mask from a quarter of full intensity (4 of 16) upwards: a
# patch-level decoder cannot resolve thinner masks (its best mIoU is 0.53 at 8 of 16, 0.69 here)
BRIGHT = 0.25
DEFAULT_SPLIT_SIZES = {"train": 2000, "val": 300, "test": 300}
# pixel statistics of the generated canvases (1 digit on 32x32), scaled to [0, 1]
CANVAS_MEAN, CANVAS_STD = (0.076,), (0.229,)
Pair = tuple[Path, Path]


def layout_message(root: Path) -> str:
    return (
        f"expected {root}/{{train,val,test}}/images/<name>.png and "
        f"{root}/{{train,val,test}}/masks/<name>.png (mask pixel = class index); "
        "set data.root to such a tree, or data.generate=true to write the digit canvases there"
    )


def scan_pairs(root: Path, split: str) -> list[Pair]:
    """(image, mask) paths of a split, paired by file stem; a clear error when any is missing."""
    images_dir, masks_dir = root / split / "images", root / split / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise FileNotFoundError(f"no {split} split: {layout_message(root)}")
    images = {path.stem: path for path in images_dir.glob("*.png")}
    masks = {path.stem: path for path in masks_dir.glob("*.png")}
    if not images:
        raise FileNotFoundError(f"no PNG images in {images_dir}: {layout_message(root)}")
    unpaired = sorted(images.keys() ^ masks.keys())
    if unpaired:
        raise FileNotFoundError(
            f"{len(unpaired)} image(s) without mask or mask(s) without image in {root / split}, "
            f"e.g. {unpaired[:3]}: {layout_message(root)}"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


class SegmentationFiles(Dataset):
    """Image/mask PNG pairs: (image (C, H, W) float, mask (H, W) int64 class indices)."""

    def __init__(self, pairs: list[Pair], in_chans: int, transform: v2.Transform):
        self.pairs, self.transform = pairs, transform
        self.mode = "L" if in_chans == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        with Image.open(image_path) as image_file, Image.open(mask_path) as mask_file:
            image = tv_tensors.Image(v2.functional.pil_to_tensor(image_file.convert(self.mode)))
            mask = tv_tensors.Mask(torch.from_numpy(np.array(mask_file, dtype=np.int64)))
        # v2 resizes a Mask with nearest neighbours: class indices stay class indices
        image, mask = self.transform(image, mask)
        return image, mask.as_subclass(torch.Tensor)


class SegmentationDataModule(SplitsDataModule):
    """Image/mask folders (see the module docstring) resized to ``img_size`` and standardised.

    ``generate=True`` writes the digit canvases (``write_digit_canvas``, ``split_sizes`` images
    per split, ``canvas`` pixels a side) into ``root`` when it does not exist yet, so the default
    config runs offline. ``epoch_seed`` reseeds every RNG at each epoch's train loader (see
    ``vitlab.data.epoch_seed``) for exact resume.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        img_size: int,
        num_classes: int,
        in_chans: int = 1,
        batch_size: int = 64,
        mean: Sequence[float] = CANVAS_MEAN,
        std: Sequence[float] = CANVAS_STD,
        generate: bool = False,
        split_sizes: Mapping[str, int] = DEFAULT_SPLIT_SIZES,
        canvas: int = 32,
        generate_seed: int = 0,
        num_workers: int = 0,
        epoch_seed: int | None = None,
    ):
        super().__init__(batch_size, num_workers, epoch_seed)
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(
                f"mean and std need one value per channel ({in_chans}), got {mean} and {std}"
            )
        self.root = Path(root).expanduser()
        self.img_size = img_size
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.transform = v2.Compose(
            [
                v2.Resize([img_size, img_size], antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(mean), list(std)),
            ]
        )
        self.generate = generate
        self.split_sizes = dict(split_sizes)
        self.canvas = canvas
        self.generate_seed = generate_seed

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node: the only place that writes files
        if self.generate and not self.root.exists():
            write_digit_canvas(self.root, self.split_sizes, self.canvas, self.generate_seed)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {self.root} does not exist: {layout_message(self.root)}"
            )
        self.splits = {
            split: SegmentationFiles(scan_pairs(self.root, split), self.in_chans, self.transform)
            for split in SPLITS
        }


def digit_sources(split_sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint pools of digit indices, one per split, sized in proportion to the split: test
    canvases show handwriting never seen in training."""
    order = np.random.default_rng(seed).permutation(len(load_digits().target))
    total = sum(split_sizes.values())
    bounds = np.cumsum([0, *split_sizes.values()]) * len(order) // total
    return {
        split: order[start:end]
        for split, start, end in zip(split_sizes, bounds[:-1], bounds[1:], strict=True)
    }


def paste_digit(
    digit: np.ndarray, label: int, canvas: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """An 8x8 digit (values 0-16) upsampled to 16x16 at a random position on a blank canvas:
    the uint8 image, and the mask (``label + 1`` where the digit is bright, 0 elsewhere)."""
    pixels = np.kron(digit / 16.0, np.ones((2, 2)))
    top, left = rng.integers(0, canvas - DIGIT_SIZE + 1, size=2)
    window = np.s_[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE]
    image = np.zeros((canvas, canvas), dtype=np.uint8)
    mask = np.zeros((canvas, canvas), dtype=np.uint8)
    image[window] = np.round(pixels * 255).astype(np.uint8)
    mask[window] = np.where(pixels >= BRIGHT, label + 1, 0)
    return image, mask


def write_digit_canvas(
    root: str | os.PathLike,
    splits: Mapping[str, int] = DEFAULT_SPLIT_SIZES,
    canvas: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``splits[split]`` digit canvases per split as PNG image/mask pairs under ``root``.

    Each canvas holds one scikit-learn digit (11 mask classes: background and the ten digits).
    The tree is written beside ``root`` and renamed into place, so an interrupted run never
    leaves a partial dataset that later runs would take for complete.
    """
    if canvas < DIGIT_SIZE:
        raise ValueError(f"canvas must be at least {DIGIT_SIZE} pixels (a digit), got {canvas}")
    root = Path(root).expanduser()
    partial = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for split, pool in digit_sources(splits, seed).items():
        (partial / split / "images").mkdir(parents=True)
        (partial / split / "masks").mkdir(parents=True)
        for index, source in enumerate(rng.choice(pool, size=splits[split])):
            image, mask = paste_digit(
                digits.images[source], int(digits.target[source]), canvas, rng
            )
            Image.fromarray(image).save(partial / split / "images" / f"{index:05d}.png")
            Image.fromarray(mask).save(partial / split / "masks" / f"{index:05d}.png")
    root.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(root)
    return root
