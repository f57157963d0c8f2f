"""CocoDetectionDataModule on a hand-written COCO tree, and on the generated digit canvases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data.coco import CocoDetectionDataModule
from vitlab.data.digit_canvas import DigitCanvasDetectionDataModule


def write_coco_tree(root: Path) -> Path:
    """Two images per split: a 40x20 one with two boxes (category ids 3 and 7, COCO's gaps) and
    a crowd box, and a 20x20 one without any box."""
    for name in ("train", "val", "test"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(root / name / "wide.png")
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / name / "empty.png")
    instances = {
        "images": [
            {"id": 1, "file_name": "wide.png", "width": 40, "height": 20},
            {"id": 2, "file_name": "empty.png", "width": 20, "height": 20},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [0, 0, 20, 10],
                "area": 200,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "bbox": [20, 10, 20, 10],
                "area": 200,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 3,
                "bbox": [5, 5, 4, 4],
                "area": 16,
                "iscrowd": 1,
            },
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }
    (root / "annotations").mkdir()
    for name in ("train", "val", "test"):
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(instances))
    return root


def test_boxes_are_letterboxed_with_their_image_and_an_image_may_have_none(tmp_path: Path):
    datamodule = CocoDetectionDataModule(
        write_coco_tree(tmp_path / "coco"), img_size=32, num_classes=3, batch_size=2
    )
    datamodule.setup("fit")
    assert datamodule.class_names == ["background", "cat", "dog"]
    pixels, targets = next(iter(datamodule.val_dataloader()))
    assert pixels.dtype == torch.uint8
    images, same_targets = datamodule.on_after_batch_transfer((pixels, targets), 0)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert same_targets is targets
    std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
    torch.testing.assert_close(images[0, :, 0, 0], -mean / std)  # the padding, standardised
    wide, empty = targets
    # 40x20 -> 32x16, padded by 8 rows above and below; crowd left out; ids 7, 3 -> labels 2, 1
    torch.testing.assert_close(
        wide["boxes"], torch.tensor([[0.0, 8.0, 16.0, 16.0], [16.0, 16.0, 32.0, 24.0]])
    )
    assert wide["labels"].tolist() == [2, 1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    padding, picture = images[0, :, :8], images[0, :, 8:24]
    assert (padding == padding[:, :1, :1]).all() and (picture > padding[:, :1, :1]).all()


def test_a_missing_annotation_file_names_the_layout(tmp_path: Path):
    datamodule = CocoDetectionDataModule(
        tmp_path, img_size=32, num_classes=3, split_names={"train": "train2017"}
    )
    with pytest.raises(FileNotFoundError, match="annotations/instances_train2017.json"):
        datamodule.setup("fit")


def test_a_wrong_number_of_classes_is_refused(tmp_path: Path):
    datamodule = CocoDetectionDataModule(
        write_coco_tree(tmp_path / "coco"), img_size=32, num_classes=81
    )
    with pytest.raises(ValueError, match="set it to 3"):
        datamodule.setup("fit")


def test_digit_canvases_have_one_box_per_digit_around_its_mask(tmp_path: Path):
    sizes = {"train": 4, "val": 2, "test": 2}
    datamodule = DigitCanvasDetectionDataModule(
        tmp_path / "canvas",
        img_size=32,
        num_classes=11,
        in_chans=1,
        mean=[0.0],
        std=[1.0],
        split_sizes=sizes,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.class_names == ["background", *map(str, range(10))]
    image, target = datamodule.splits["train"][1]
    with Image.open(tmp_path / "canvas" / "train" / "masks" / "00001.png") as file:
        mask = torch.from_numpy(np.array(file))
    rows, cols = torch.nonzero(mask, as_tuple=True)
    expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    assert target["boxes"].tolist() == [[float(v) for v in expected]]
    assert target["labels"].tolist() == [int(mask.max())]


def test_predict_transform_of_an_image_file_is_its_letterboxed_evaluation_input(tmp_path: Path):
    root = write_coco_tree(tmp_path / "coco")
    datamodule = CocoDetectionDataModule(root, img_size=32, num_classes=3, batch_size=2)
    datamodule.setup("fit")
    with Image.open(root / "val" / "wide.png") as file:
        prepared = datamodule.predict_transform()(file)
    pixels, targets = datamodule.splits["val"][0]
    (expected,), _ = datamodule.on_after_batch_transfer((pixels[None], [targets]), 0)
    assert torch.equal(prepared, expected)
