"""Class names saved into checkpoints by the DataModule and read back without the data."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vitlab.checkpoint_file import read_checkpoint, stored_class_names
from vitlab.data.digits import DigitsDataModule
from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.synthetic import write_image_tree
from vitlab.tasks.classification import ClassificationTask

TARGET = "vitlab.data.imagefolder.ImageFolderDataModule"


def test_a_checkpoint_keeps_the_class_names_after_the_data_is_gone(
    tmp_path: Path, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    root = tmp_path / "tree"
    write_image_tree(root, {"train": 4, "val": 1}, num_classes=2)
    (root / "LOC_synset_mapping.txt").write_text("class_0 tench\nclass_1 goldfish\n")
    datamodule = ImageFolderDataModule(root, img_size=16, batch_size=4, num_workers=0)
    vit = vit_config(img_size=16, patch_size=8, in_chans=3, num_classes=2, embed_dim=8, depth=1)
    task = ClassificationTask(
        vit, optimizer_config("SGD", lr=0.1), **task_recipe("classification", warmup_epochs=0)
    )
    trainer = quiet_trainer(
        max_steps=1,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    shutil.rmtree(root)
    checkpoint = read_checkpoint(tmp_path / "last.ckpt")
    assert stored_class_names(checkpoint, TARGET) == ["tench", "goldfish"]


def test_a_checkpoint_without_names_gives_none(tmp_path: Path):
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    assert stored_class_names(read_checkpoint(tmp_path / "bare.ckpt"), TARGET) is None


def test_names_are_read_under_the_datamodule_class_that_saved_them():
    checkpoint = {"DigitsDataModule": DigitsDataModule(batch_size=4).state_dict()}
    assert stored_class_names(checkpoint, "vitlab.data.digits.DigitsDataModule") == [
        str(digit) for digit in range(10)
    ]
    assert stored_class_names(checkpoint, TARGET) is None
