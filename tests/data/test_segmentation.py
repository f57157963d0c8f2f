"""Digit canvases written as PNG image/mask pairs, and the segmentation DataModule over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data.segmentation import DIGIT_SIZE, SegmentationDataModule, write_digit_canvas

SIZES = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def canvas_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_canvas(tmp_path_factory.mktemp("canvas") / "digits", SIZES, seed=1)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def test_every_split_has_paired_png_files(canvas_root: Path):
    for split, size in SIZES.items():
        images = sorted(p.name for p in (canvas_root / split / "images").iterdir())
        masks = sorted(p.name for p in (canvas_root / split / "masks").iterdir())
        assert images == masks and len(images) == size
        assert all(name.endswith(".png") for name in images)
    assert not list(canvas_root.parent.glob(".*partial*"))


def test_masks_mark_one_digit_where_it_is_bright(canvas_root: Path):
    for image_path in sorted((canvas_root / "train" / "images").iterdir()):
        image = read(image_path)
        mask = read(canvas_root / "train" / "masks" / image_path.name)
        assert image.shape == mask.shape == (32, 32)
        labels = np.unique(mask[mask > 0])
        assert len(labels) == 1 and 1 <= labels[0] <= 10
        # the mask lies inside the 16x16 box the digit's ink occupies, on its bright pixels
        rows, cols = np.nonzero(image)
        assert rows.max() - rows.min() < DIGIT_SIZE and cols.max() - cols.min() < DIGIT_SIZE
        np.testing.assert_array_equal(mask > 0, image >= 64)  # 4 of 16 = 63.75 of 255


def test_the_same_seed_writes_the_same_canvases(canvas_root: Path, tmp_path: Path):
    again = write_digit_canvas(tmp_path / "again", SIZES, seed=1)
    for name in ("images", "masks"):
        first = canvas_root / "val" / name / "00002.png"
        np.testing.assert_array_equal(read(first), read(again / "val" / name / "00002.png"))


def test_datamodule_yields_standardised_images_and_class_masks(canvas_root: Path):
    datamodule = SegmentationDataModule(canvas_root, img_size=16, num_classes=11, batch_size=4)
    datamodule.setup()
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (3, 1, 16, 16) and images.dtype == torch.float32
    assert masks.shape == (3, 16, 16) and masks.dtype == torch.int64
    assert type(masks) is torch.Tensor
    assert masks.max() <= 10 and set(masks.unique().tolist()) <= set(range(11))


def test_generate_writes_the_canvases_into_a_missing_root(tmp_path: Path):
    root = tmp_path / "new" / "canvas"
    datamodule = SegmentationDataModule(
        root, img_size=32, num_classes=11, generate=True, split_sizes=SIZES
    )
    datamodule.prepare_data()
    datamodule.setup()
    assert {split: len(data) for split, data in datamodule.splits.items()} == SIZES


def test_a_missing_root_names_the_expected_layout(tmp_path: Path):
    datamodule = SegmentationDataModule(tmp_path / "nowhere", img_size=32, num_classes=11)
    datamodule.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"\{train,val,test\}/images/<name>\.png"):
        datamodule.setup()


def test_an_image_without_its_mask_is_named(canvas_root: Path, tmp_path: Path):
    root = write_digit_canvas(tmp_path / "broken", SIZES, seed=1)
    (root / "test" / "masks" / "00001.png").unlink()
    datamodule = SegmentationDataModule(root, img_size=32, num_classes=11)
    with pytest.raises(FileNotFoundError, match="00001"):
        datamodule.setup()
