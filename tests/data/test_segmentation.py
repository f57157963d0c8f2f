"""The segmentation DataModule over image/mask PNG trees (the digit canvases)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vitlab.data.digit_canvas import write_digit_canvas
from vitlab.data.segmentation import SegmentationDataModule

SIZES = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def canvas_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_canvas(tmp_path_factory.mktemp("canvas") / "digits", SIZES, seed=1)


def test_datamodule_yields_standardised_images_and_class_masks(canvas_root: Path):
    datamodule = SegmentationDataModule(canvas_root, img_size=16, num_classes=11, batch_size=4)
    datamodule.setup()
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (3, 1, 16, 16) and images.dtype == torch.float32
    assert masks.shape == (3, 16, 16) and masks.dtype == torch.int64
    assert type(masks) is torch.Tensor
    assert masks.max() <= 10 and set(masks.unique().tolist()) <= set(range(11))


def test_training_images_are_not_augmented(canvas_root: Path):
    datamodule = SegmentationDataModule(canvas_root, img_size=16, num_classes=11, augment=True)
    datamodule.setup()
    image, mask = datamodule.splits["train"][0]
    again, again_mask = datamodule.splits["train"][0]
    assert torch.equal(image, again) and torch.equal(mask, again_mask)


def test_predict_transform_of_an_image_file_is_its_eval_tensor(canvas_root: Path):
    datamodule = SegmentationDataModule(canvas_root, img_size=16, num_classes=11)
    datamodule.setup()
    val = datamodule.splits["val"]
    image_path, _ = val.pairs[0]
    with Image.open(image_path) as image:
        prepared = datamodule.predict_transform()(image)
    assert torch.equal(prepared, val[0][0])


def test_generate_writes_the_canvases_into_a_missing_root(tmp_path: Path):
    root = tmp_path / "new" / "canvas"
    datamodule = SegmentationDataModule(
        root, img_size=32, num_classes=11, generate=True, split_sizes=SIZES
    )
    assert (
        datamodule.generated_sizes == SIZES and not root.exists()
    )  # the constructor wrote nothing
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.dataset_sizes() == SIZES


def test_a_missing_root_names_the_expected_layout(tmp_path: Path):
    datamodule = SegmentationDataModule(tmp_path / "nowhere", img_size=32, num_classes=11)
    datamodule.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"\{train,val,test\}/images/<name>\.png"):
        datamodule.setup()


def test_an_image_without_its_mask_is_named(tmp_path: Path):
    root = write_digit_canvas(tmp_path / "broken", SIZES, seed=1)
    (root / "test" / "masks" / "00001.png").unlink()
    datamodule = SegmentationDataModule(root, img_size=32, num_classes=11)
    with pytest.raises(FileNotFoundError, match="00001"):
        datamodule.setup()
