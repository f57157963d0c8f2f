"""The segmentation DataModule over image/mask trees: the digit canvases, and ADE20K- and
Cityscapes-layout trees of real JPEG/PNG files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from vitlab.data.digit_canvas import DigitCanvasDataModule, write_digit_canvas
from vitlab.data.segmentation import IGNORE_INDEX, SegmentationDataModule

SIZES = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def canvas_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digit_canvas(tmp_path_factory.mktemp("canvas") / "digits", SIZES, seed=1)


def test_loaders_yield_uint8_images_and_class_masks_the_batch_step_standardises(
    canvas_root: Path,
):
    datamodule = SegmentationDataModule(canvas_root, img_size=16, num_classes=11, batch_size=4)
    datamodule.setup()
    pixels, masks = next(iter(datamodule.val_dataloader()))
    assert pixels.shape == (3, 1, 16, 16) and pixels.dtype == torch.uint8
    assert masks.shape == (3, 16, 16) and masks.dtype == torch.int64
    assert type(pixels) is type(masks) is torch.Tensor
    assert masks.max() <= 10 and set(masks.unique().tolist()) <= set(range(11))
    images, same_masks = datamodule.on_after_batch_transfer((pixels, masks), 0)
    torch.testing.assert_close(images, (pixels / 255 - 0.076) / 0.229)
    assert same_masks is masks


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
    (expected,), _ = datamodule.on_after_batch_transfer((val[0][0][None], None), 0)
    assert torch.equal(prepared, expected)


def test_the_digit_canvas_datamodule_writes_the_canvases_into_a_missing_root(tmp_path: Path):
    root = tmp_path / "new" / "canvas"
    datamodule = DigitCanvasDataModule(root, img_size=32, num_classes=11, split_sizes=SIZES)
    assert not root.exists()  # the constructor wrote nothing
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.dataset_sizes() == SIZES


def test_the_readers_take_no_generation_options(tmp_path: Path):
    with pytest.raises(TypeError, match="split_sizes"):
        SegmentationDataModule(tmp_path, img_size=32, num_classes=11, split_sizes=SIZES)


def test_a_missing_root_names_the_expected_layout(tmp_path: Path):
    datamodule = SegmentationDataModule(tmp_path / "nowhere", img_size=32, num_classes=11)
    datamodule.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"nowhere/train/images/<name>\.png"):
        datamodule.setup()


def test_an_image_without_its_mask_is_named(tmp_path: Path):
    root = write_digit_canvas(tmp_path / "broken", SIZES, seed=1)
    (root / "test" / "masks" / "00001.png").unlink()
    datamodule = SegmentationDataModule(root, img_size=32, num_classes=11)
    with pytest.raises(FileNotFoundError, match="00001"):
        datamodule.setup()


def write_pair(image: Path, mask: Path, labels: np.ndarray) -> None:
    """A colour image (JPEG or PNG by its suffix) and its one-channel PNG label map."""
    for path in (image, mask):
        path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(labels.sum()))
    pixels = rng.integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    Image.fromarray(labels.astype(np.uint8)).save(mask)


def ade_labels(height: int, width: int) -> np.ndarray:
    """Row bands of "other" (0), class 1, class 150 and class 7 (1-based, as ADE20K stores)."""
    bands = np.array([0, 1, 150, 7]).repeat(height // 4)
    return np.broadcast_to(bands[:, None], (height, width)).copy()


@pytest.fixture(scope="module")
def ade20k_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    for split, names in {"training": ["a", "b"], "validation": ["c"]}.items():
        for name in names:
            image = root / "images" / split / f"ADE_{split}_{name}.jpg"
            mask = root / "annotations" / split / f"ADE_{split}_{name}.png"
            write_pair(image, mask, ade_labels(24, 40))
    return root


def test_ade20k_layout_reads_jpegs_with_label_zero_ignored_and_the_rest_shifted(
    ade20k_root: Path, compose_config
):
    cfg = compose_config(
        "experiment=none", "task=segmentation", "data=ade20k", "model=vit_digits",
        "model.img_size=16", f"data.root={ade20k_root}", "data.batch_size=2",
    )  # fmt: skip
    assert cfg.task.ignore_index == IGNORE_INDEX and cfg.task.model.num_classes == 150
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert datamodule.dataset_sizes() == {"train": 2, "val": 1, "test": 1}
    images, masks = next(iter(datamodule.val_dataloader()))
    assert images.shape == (1, 3, 16, 16) and masks.shape == (1, 16, 16)
    # the bands, resized by nearest neighbours: other -> ignored, 1 -> 0, 150 -> 149, 7 -> 6
    assert masks[0, :, 0].tolist() == [IGNORE_INDEX] * 4 + [0] * 4 + [149] * 4 + [6] * 4


def test_ade20k_training_crops_pad_the_mask_with_the_ignore_label(ade20k_root: Path):
    datamodule = SegmentationDataModule(
        ade20k_root, img_size=48, num_classes=150, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3,
        images="images/{split}", masks="annotations/{split}", image_suffix=".jpg",
        split_names={"train": "training", "val": "validation", "test": "validation"},
        reduce_zero_label=True, train_short_side=(12, 20),
    )  # fmt: skip
    datamodule.setup()
    image, mask = datamodule.splits["train"][0]
    # the shorter side (24) rescaled to 12-20 pixels, then a 48-pixel crop: padded around it
    assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
    assert (mask == IGNORE_INDEX).sum() > 48 * 48 // 2
    assert set(mask.unique().tolist()) <= {0, 6, 149, IGNORE_INDEX}


def test_cityscapes_layout_pairs_files_across_city_folders(tmp_path: Path, compose_config):
    root = tmp_path / "cityscapes"
    for split, cities in {"train": ["aachen", "bremen"], "val": ["lindau"]}.items():
        for city in cities:
            stem = f"{city}_000000_000019"
            labels = np.full((16, 32), IGNORE_INDEX)
            labels[:8] = 13  # car
            write_pair(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png",
                labels,
            )
    cfg = compose_config(
        "experiment=none", "task=segmentation", "data=cityscapes", "model=vit_digits",
        "model.img_size=16", f"data.root={root}",
    )  # fmt: skip
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert datamodule.dataset_sizes() == {"train": 2, "val": 1, "test": 1}
    _, mask = datamodule.splits["val"][0]
    assert mask[:8].eq(13).all() and mask[8:].eq(IGNORE_INDEX).all()
