"""Semantic segmentation data: image/mask PNG pairs, and a generated digit-canvas dataset.

Layout read by ``SegmentationDataModule``::

    <root>/{train,val,test}/images/<stem>.png
    <root>/{train,val,test}/masks/<stem>.png    one channel, pixel value = class index

``vitlab.data.digit_canvas.write_digit_canvas`` writes such a tree offline (the digit canvases).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vitlab.data.base import SPLITS, SplitsDataModule
from vitlab.data.digit_canvas import DEFAULT_SPLIT_SIZES, write_digit_canvas

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

    def __init__(self, pairs: list[Pair], mode: str, transform: v2.Transform):
        self.pairs, self.mode, self.transform = pairs, mode, transform

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
    config runs offline. The training images get no augmentation (``augment`` has nothing to turn
    off). ``epoch_seed`` reseeds every RNG at each epoch's train loader (see
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
        augment: bool = True,
        generate: bool = False,
        split_sizes: Mapping[str, int] = DEFAULT_SPLIT_SIZES,
        canvas: int = 32,
        generate_seed: int = 0,
        num_workers: int = 0,
        epoch_seed: int | None = None,
    ):
        super().__init__(
            img_size,
            in_chans,
            num_classes,
            batch_size,
            mean,
            std,
            augment,
            num_workers,
            epoch_seed=epoch_seed,
        )
        self.root = Path(root).expanduser()
        self.mode = "L" if in_chans == 1 else "RGB"
        self.generate = generate
        self.generated_sizes = dict(split_sizes)
        self.canvas = canvas
        self.generate_seed = generate_seed

    def eval_transform(self) -> v2.Compose:
        """A uint8 image (and its mask) of any size: resized to ``img_size`` (the mask by nearest
        neighbours, as v2 resizes a ``Mask``), scaled to [0, 1] and standardised."""
        return v2.Compose(
            [
                v2.Resize([self.img_size, self.img_size], antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )

    def predict_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        transform = self.eval_transform()
        return lambda image: transform(v2.functional.pil_to_tensor(image.convert(self.mode)))

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node: the only place that writes files
        if self.generate and not self.root.exists():
            write_digit_canvas(self.root, self.generated_sizes, self.canvas, self.generate_seed)

    def build_splits(self) -> dict[str, Dataset]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {self.root} does not exist: {layout_message(self.root)}"
            )
        transform = self.eval_transform()
        return {
            split: SegmentationFiles(scan_pairs(self.root, split), self.mode, transform)
            for split in SPLITS
        }
