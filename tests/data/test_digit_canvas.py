"""The digit canvases, written offline as PNG image/mask pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlab.data.digit_canvas import DIGIT_SIZE, write_digit_canvas

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


def test_a_canvas_smaller_than_a_digit_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="canvas must be at least 16 pixels"):
        write_digit_canvas(tmp_path / "small", SIZES, canvas=12)
