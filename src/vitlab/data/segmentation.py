"""Semantic segmentation data: image/mask file pairs, in any of the common folder layouts.

``SegmentationDataModule`` pairs the images under ``<root>/<images>`` with the masks under
``<root>/<masks>`` (``{split}`` in either replaced by the split's name in ``split_names``) by
their paths below those folders, less ``image_suffix`` / ``mask_suffix``. The layouts it is
configured for (``conf/data``)::

    digit_canvas  <root>/{train,val,test}/images/<name>.png, masks/<name>.png (pixel = class)
    ade20k        <root>/images/{training,validation}/<name>.jpg,
                  <root>/annotations/{training,validation}/<name>.png: 0 = "other", ignored,
                  1..150 -> 0..149 (``reduce_zero_label``, as mmsegmentation)
    cityscapes    <root>/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png,
                  <root>/gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png (19 classes,
                  255 ignored)

A mask pixel equal to ``ignore_index`` (255) counts for neither the loss nor the metrics
(``vitlab.tasks.segmentation``). ``vitlab.data.digit_canvas`` writes the first layout offline
(the digit canvases) and reads it with this DataModule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vitlab.data.base import SPLITS, SplitsDataModule

# pixel statistics of the generated canvases (1 digit on 32x32), scaled to [0, 1]
CANVAS_MEAN, CANVAS_STD = (0.076,), (0.229,)
# mmsegmentation's and Cityscapes' label of pixels that no class claims
IGNORE_INDEX = 255
Pair = tuple[Path, Path]


def reduce_zero_label(mask: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """ADE20K's labels: 0 ("other") becomes ``ignore_index``, class ``c`` (1..150) ``c - 1``;
    ``ignore_index`` stays (mmsegmentation's ``reduce_zero_label``)."""
    reduced = mask.astype(np.int64) - 1
    reduced[(mask == 0) | (mask == ignore_index)] = ignore_index
    return reduced


class SegmentationFiles(Dataset):
    """Image/mask pairs: (image (C, H, W) uint8, mask (H, W) int64 class indices)."""

    def __init__(
        self,
        pairs: list[Pair],
        mode: str,
        transform: v2.Transform,
        reduce_zero_label: bool = False,
    ):
        self.pairs, self.mode, self.transform = pairs, mode, transform
        self.reduce_zero_label = reduce_zero_label

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        with Image.open(image_path) as image_file, Image.open(mask_path) as mask_file:
            image = tv_tensors.Image(v2.functional.pil_to_tensor(image_file.convert(self.mode)))
            labels = np.array(mask_file)
        if self.reduce_zero_label:
            labels = reduce_zero_label(labels)
        mask = tv_tensors.Mask(torch.from_numpy(labels.astype(np.int64)))
        # v2 resizes a Mask with nearest neighbours: class indices stay class indices
        image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class SegmentationDataModule(SplitsDataModule):
    """Image/mask pairs (see the module docstring for the layouts), resized to ``img_size``
    square for evaluation; the batch step standardises the images.

    ``train_short_side`` (``[low, high]``) turns on mmsegmentation's training augmentation when
    ``augment`` is true: the shorter side resized to a random length in that range (aspect
    kept), a random ``img_size`` square crop (padded with 0 and ``ignore_index`` where the image
    is smaller), a random horizontal flip. Without it the training images are prepared as for
    evaluation (the digit canvases). ``epoch_seed`` reseeds every RNG at each epoch's train
    loader (see ``vitlab.data.epoch_seed``) for exact resume.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        images: str = "{split}/images",
        masks: str = "{split}/masks",
        image_suffix: str = ".png",
        mask_suffix: str = ".png",
        split_names: Mapping[str, str] | None = None,
        reduce_zero_label: bool = False,
        ignore_index: int = IGNORE_INDEX,
        train_short_side: Sequence[int] | None = None,
        in_chans: int = 1,
        mean: Sequence[float] = CANVAS_MEAN,
        std: Sequence[float] = CANVAS_STD,
        batch_size: int = 64,
        **shared: Any,
    ):
        super().__init__(in_chans=in_chans, mean=mean, std=std, batch_size=batch_size, **shared)
        self.root = Path(root).expanduser()
        self.mode = "L" if in_chans == 1 else "RGB"
        self.images, self.masks = images, masks
        self.image_suffix, self.mask_suffix = image_suffix, mask_suffix
        self.split_names = dict(split_names or {split: split for split in SPLITS})
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.train_short_side = tuple(train_short_side) if train_short_side else None

    def layout_message(self) -> str:
        split = next(iter(self.split_names.values()))
        return (
            f"expected images {self.root}/{self.images.format(split=split)}/<name>"
            f"{self.image_suffix} and masks {self.root}/{self.masks.format(split=split)}/<name>"
            f"{self.mask_suffix} (mask pixel = class index), one pair of folders per split of "
            f"data.split_names {self.split_names}; set data.root to such a tree "
            "(data=digit_canvas writes one)"
        )

    def scan_pairs(self, split: str) -> list[Pair]:
        """(image, mask) paths of a split, paired by their paths below the split's image and
        mask folders less the suffixes; a clear error when any is missing."""
        name = self.split_names[split]
        images_dir = self.root / self.images.format(split=name)
        masks_dir = self.root / self.masks.format(split=name)
        if not images_dir.is_dir() or not masks_dir.is_dir():
            raise FileNotFoundError(f"no {split} split: {self.layout_message()}")

        def by_name(folder: Path, suffix: str) -> dict[str, Path]:
            return {
                str(path.relative_to(folder))[: -len(suffix)]: path
                for path in folder.rglob(f"*{suffix}")
            }

        images = by_name(images_dir, self.image_suffix)
        masks = by_name(masks_dir, self.mask_suffix)
        if not images:
            raise FileNotFoundError(
                f"no *{self.image_suffix} images in {images_dir}: {self.layout_message()}"
            )
        unpaired = sorted(images.keys() ^ masks.keys())
        if unpaired:
            raise FileNotFoundError(
                f"{len(unpaired)} image(s) without mask or mask(s) without image in "
                f"{images_dir} / {masks_dir}, e.g. {unpaired[:3]}: {self.layout_message()}"
            )
        return [(images[name], masks[name]) for name in sorted(images)]

    def eval_transform(self) -> v2.Resize:
        """A uint8 image (and its mask) of any size: resized to ``img_size`` (the mask by nearest
        neighbours, as v2 resizes a ``Mask``)."""
        return v2.Resize([self.image.size, self.image.size], antialias=True)

    def train_transform(self) -> v2.Compose:
        """``eval_transform``, or with ``augment`` and ``train_short_side``: random rescale,
        ``img_size`` crop (padding the mask with ``ignore_index``) and horizontal flip."""
        if not (self.augment and self.train_short_side):
            return self.eval_transform()
        low, high = self.train_short_side
        return v2.Compose(
            [
                v2.RandomShortestSize(list(range(low, high + 1)), antialias=True),
                v2.RandomCrop(
                    self.image.size,
                    pad_if_needed=True,
                    fill={tv_tensors.Image: 0, tv_tensors.Mask: self.ignore_index},
                ),
                v2.RandomHorizontalFlip(),
            ]
        )

    def read_image(self, image: Image.Image) -> torch.Tensor:
        return v2.functional.pil_to_tensor(image.convert(self.mode))

    def build_splits(self) -> dict[str, Dataset]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {self.root} does not exist: {self.layout_message()}"
            )
        return {
            split: SegmentationFiles(
                self.scan_pairs(split),
                self.mode,
                self.train_transform() if split == "train" else self.eval_transform(),
                self.reduce_zero_label,
            )
            for split in SPLITS
        }
