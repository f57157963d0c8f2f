"""The digit-canvas dataset, written offline: scikit-learn digits pasted on blank canvases, the
mask marking each digit's bright pixels with its class + 1 (0 is background), as the image/mask
PNG tree that ``SegmentationDataModule`` reads, and the box around those pixels (category
``digit + 1``, named after the digit) as the COCO ``annotations/instances_<split>.json`` that
``CocoDetectionDataModule`` reads (``file_name`` relative to ``<root>/<split>``).

Its DataModules (``DigitCanvasDataModule``: masks, ``DigitCanvasDetectionDataModule``: boxes)
are those readers that write the tree first when it is missing."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from vitlab.data.coco import CocoDetectionDataModule
from vitlab.data.segmentation import SegmentationDataModule

DIGIT_SIZE = 16  # the 8x8 digits, each pixel repeated 2x2
# a digit pixel belongs to the mask from a quarter of full intensity (4 of 16) upwards: a
# patch-level decoder cannot resolve thinner masks (its best mIoU is 0.53 at 8 of 16, 0.69 here)
BRIGHT = 0.25
DEFAULT_SPLIT_SIZES = {"train": 2000, "val": 300, "test": 300}


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


def coco_box(mask: np.ndarray) -> list[int]:
    """COCO's [x, y, width, height] of a mask's nonzero pixels."""
    rows, cols = np.nonzero(mask)
    top, left = int(rows.min()), int(cols.min())
    return [left, top, int(cols.max()) + 1 - left, int(rows.max()) + 1 - top]


def coco_annotations(masks: list[np.ndarray]) -> dict:
    """COCO instances of the canvases ``images/00000.png``...: one box per mask, its category
    the mask's class (``digit + 1``)."""
    images, annotations = [], []
    for index, mask in enumerate(masks):
        height, width = mask.shape
        images.append(
            {"id": index, "file_name": f"images/{index:05d}.png", "height": height, "width": width}
        )
        box = coco_box(mask)
        annotations.append(
            {
                "id": index,
                "image_id": index,
                "category_id": int(mask.max()),
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
        )
    categories = [{"id": digit + 1, "name": str(digit)} for digit in range(10)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_digit_canvas(
    root: str | os.PathLike,
    splits: Mapping[str, int] = DEFAULT_SPLIT_SIZES,
    canvas: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``splits[split]`` digit canvases per split as PNG image/mask pairs under ``root``.

    Each canvas holds one scikit-learn digit (11 mask classes: background and the ten digits);
    ``annotations/instances_<split>.json`` holds its box in COCO format.
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
        masks = []
        for index, source in enumerate(rng.choice(pool, size=splits[split])):
            image, mask = paste_digit(
                digits.images[source], int(digits.target[source]), canvas, rng
            )
            Image.fromarray(image).save(partial / split / "images" / f"{index:05d}.png")
            Image.fromarray(mask).save(partial / split / "masks" / f"{index:05d}.png")
            masks.append(mask)
        (partial / "annotations").mkdir(exist_ok=True)
        instances = partial / "annotations" / f"instances_{split}.json"
        instances.write_text(json.dumps(coco_annotations(masks)))
    root.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(root)
    return root


class WritesDigitCanvas:
    """What makes a reader of the canvases' tree (masks or boxes) the digit-canvas DataModule:
    ``split_sizes`` images per split, ``canvas`` pixels a side, ``generate_seed``, written in
    ``prepare_data`` when ``root`` does not exist yet. The readers themselves write nothing."""

    root: Path

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split_sizes: Mapping[str, int] = DEFAULT_SPLIT_SIZES,
        canvas: int = 32,
        generate_seed: int = 0,
        **reader: Any,
    ):
        super().__init__(root, **reader)
        self.split_sizes = dict(split_sizes)
        self.canvas = canvas
        self.generate_seed = generate_seed

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node: the only place that writes files
        if not self.root.exists():
            write_digit_canvas(self.root, self.split_sizes, self.canvas, self.generate_seed)


class DigitCanvasDataModule(WritesDigitCanvas, SegmentationDataModule):
    """data=digit_canvas: the canvases and their masks (11 classes, 0 the background),
    written into ``root`` on first use."""


class DigitCanvasDetectionDataModule(WritesDigitCanvas, CocoDetectionDataModule):
    """data=digit_canvas_detection: the canvases and their boxes in COCO format (the same tree
    as ``DigitCanvasDataModule``), written into ``root`` on first use."""
