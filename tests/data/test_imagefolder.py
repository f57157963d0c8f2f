"""ImageFolder / ImageNet DataModules on real JPEG/PNG trees written to a temp dir."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitlab.data.imagefolder import ImageFolderDataModule, ImageNetDataModule
from vitlab.data.sampler import RepeatedAugSampler
from vitlab.data.synthetic import write_image_tree
from vitlab.data.transforms import collate_present

SMALL = {"img_size": 32, "batch_size": 4, "num_workers": 0}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """train (6 per class) + val (2 per class), a truncated JPEG, a text file, an empty class."""
    root = tmp_path / "tree"
    written = write_image_tree(root, {"train": 6, "val": 2})
    jpeg = written[0].read_bytes()
    (root / "train" / "class_0" / "broken.JPEG").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "train" / "class_1" / "notes.txt").write_text("not an image")
    (root / "train" / "empty_class").mkdir()
    return root


def test_classes_come_from_the_folders_that_hold_images_when_set_up(tree: Path):
    datamodule = ImageFolderDataModule(tree, **SMALL)
    assert datamodule.num_classes is None and datamodule.class_names is None  # no file read yet
    datamodule.setup()
    assert datamodule.num_classes == 3
    assert datamodule.class_names == ["class_0", "class_1", "class_2"]
    assert datamodule.state_dict() == {"class_names": ["class_0", "class_1", "class_2"]}


def test_skipped_files_and_empty_folders_are_counted_in_the_log(tree: Path, caplog):
    with caplog.at_level(logging.WARNING):
        datamodule = ImageFolderDataModule(tree, **SMALL)
        datamodule.setup()
    assert "skipped 1 empty class folder" in caplog.text
    assert "skipped 1 non-image file" in caplog.text
    # 6 images per class plus the broken JPEG, which is only found out when decoded
    assert len(datamodule.splits["train"]) == 19
    assert len(datamodule.splits["val"]) == len(datamodule.splits["test"]) == 6


def test_a_corrupt_image_is_named_in_a_warning_and_skipped(tree: Path):
    datamodule = ImageFolderDataModule(tree, **SMALL)
    datamodule.setup()
    train = datamodule.splits["train"]
    broken = next(i for i, (path, _) in enumerate(train.samples) if path.endswith("broken.JPEG"))
    with pytest.warns(UserWarning, match="broken.JPEG"):
        assert train[broken] is None
    image, label = train[broken - 1]
    assert image.shape == (3, 32, 32) and label == 0


def test_a_batch_holding_a_corrupt_image_drops_it_and_keeps_soft_targets(tree: Path):
    datamodule = ImageFolderDataModule(tree, mix={"mixup_alpha": 0.8}, **SMALL)
    datamodule.setup()
    train = datamodule.splits["train"]
    with pytest.warns(UserWarning, match="broken.JPEG"):
        batch = collate_present([train[i] for i in range(len(train))])
    images, targets = datamodule.batch_step(batch, train=True)
    assert images.shape == (18, 3, 32, 32) and images.dtype == torch.float32
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(18))


def test_on_corrupt_raise_names_the_file(tree: Path):
    datamodule = ImageFolderDataModule(tree, on_corrupt="raise", **SMALL)
    datamodule.setup()
    train = datamodule.splits["train"]
    broken = next(i for i, (path, _) in enumerate(train.samples) if path.endswith("broken.JPEG"))
    with pytest.raises(OSError, match="broken.JPEG"):
        train[broken]


def test_missing_root_names_the_expected_layout_at_setup(tmp_path: Path):
    datamodule = ImageFolderDataModule(tmp_path / "nowhere", **SMALL)
    with pytest.raises(FileNotFoundError, match=r"nowhere/train/<class>/<image>"):
        datamodule.setup()


def test_a_wrong_class_count_is_an_error_at_setup(tree: Path):
    datamodule = ImageFolderDataModule(tree, num_classes=5, **SMALL)
    with pytest.raises(ValueError, match="num_classes=5 but .* has 3 class folders"):
        datamodule.setup()


def test_val_is_carved_from_train_with_a_fixed_seed_when_there_is_no_val_dir(tmp_path: Path):
    write_image_tree(tmp_path, {"train": 10})

    def splits() -> dict:
        datamodule = ImageFolderDataModule(tmp_path, val_fraction=0.2, **SMALL)
        datamodule.setup()
        return {name: {path for path, _ in d.samples} for name, d in datamodule.splits.items()}

    first, second = splits(), splits()
    assert first == second
    assert len(first["val"]) == 6 and len(first["train"]) == 24
    assert not first["val"] & first["train"]
    assert first["test"] == first["val"]


def test_a_test_dir_is_the_test_split(tmp_path: Path):
    write_image_tree(tmp_path, {"train": 4, "val": 1, "test": 2})
    datamodule = ImageFolderDataModule(tmp_path, **SMALL)
    datamodule.setup()
    assert all("/test/" in path for path, _ in datamodule.splits["test"].samples)
    assert len(datamodule.splits["test"]) == 6


def test_train_loader_drops_the_last_batch_and_uses_repeated_augmentation(tree: Path):
    datamodule = ImageFolderDataModule(tree, repeated_aug=3, mix=None, **SMALL)
    datamodule.setup()
    loader = datamodule.train_dataloader()
    assert isinstance(loader.sampler, RepeatedAugSampler)
    assert loader.drop_last
    batches = list(loader)
    assert len(batches) == len(loader.sampler) // 4
    assert all(len(labels) == 4 and labels.ndim == 1 for _, labels in batches)


def test_imagenet_needs_val_and_reads_class_names(tmp_path: Path):
    write_image_tree(tmp_path, {"train": 2})
    with pytest.raises(FileNotFoundError, match=r"\{train,val\}/<class>/<image>"):
        ImageNetDataModule(tmp_path, num_classes=3, **SMALL).setup()
    write_image_tree(tmp_path, {"val": 1})
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "class_0 tench, Tinca tinca\nclass_2 goldfish\n"
    )
    imagenet = ImageNetDataModule(tmp_path, num_classes=3, **SMALL)
    imagenet.setup()
    assert imagenet.class_names == ["tench, Tinca tinca", "class_1", "goldfish"]
    with pytest.raises(ValueError, match="num_classes=1000"):
        ImageNetDataModule(tmp_path, **SMALL).setup()


def test_grey_pngs_become_rgb(tmp_path: Path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("L", (40, 30), 128).save(tmp_path / split / "a" / "grey.png")
    datamodule = ImageFolderDataModule(tmp_path, **SMALL)
    datamodule.setup()
    image, label = datamodule.splits["val"][0]
    assert image.shape == (3, 32, 32) and label == 0


def test_predict_transform_of_an_image_file_is_its_evaluation_input(tmp_path: Path):
    write_image_tree(tmp_path, {"train": 2, "val": 4})  # every 4th image is a PNG
    datamodule = ImageFolderDataModule(tmp_path, **SMALL)
    datamodule.setup()
    val = datamodule.splits["val"]
    index = next(i for i, (path, _) in enumerate(val.samples) if path.endswith(".png"))
    images, _ = datamodule.on_after_batch_transfer(collate_present([val[index]]), 0)
    with Image.open(val.samples[index][0]) as image:
        prepared = datamodule.predict_transform()(image)
    assert prepared.dtype == torch.float32
    torch.testing.assert_close(prepared, images[0])


def test_erasing_keys_of_train_transform_configure_the_batch_step(tree: Path):
    erase = {"erase_prob": 1.0, "erase_mode": "const"}
    datamodule = ImageFolderDataModule(tree, train_transform=erase, **SMALL)
    datamodule.setup()
    assert (datamodule.batch_step.erase.prob, datamodule.batch_step.erase.mode) == (1.0, "const")
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    erased, _ = datamodule.batch_step((images, torch.tensor([0, 1])), train=True)
    assert erased.eq(0).flatten(1).any(dim=1).all()
    # DeiT's by default; none without augmentation or at probability 0
    default = ImageFolderDataModule(tree, **SMALL)
    default.setup()
    assert (default.batch_step.erase.prob, default.batch_step.erase.mode) == (0.25, "pixel")
    for off in ({"augment": False}, {"train_transform": {"erase_prob": 0.0}}):
        datamodule = ImageFolderDataModule(tree, **off, **SMALL)
        datamodule.setup()
        assert datamodule.batch_step.erase is None


def test_eval_crop_null_resizes_by_the_mae_rule(tmp_path: Path):
    write_image_tree(tmp_path, {"train": 1, "val": 1}, size=(300, 260))
    datamodule = ImageFolderDataModule(tmp_path, **{**SMALL, "img_size": 240}, eval_crop_pct=None)
    datamodule.setup()
    # above 224 px the whole image is resized to img_size, not img_size / 0.875
    assert datamodule.preprocessing()[2] == {
        "op": "resize",
        "size": 240,
        "interpolation": "bicubic",
    }
    image, _ = datamodule.splits["val"][0]
    assert image.shape == (3, 240, 240)
