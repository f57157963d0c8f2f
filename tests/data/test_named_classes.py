"""Class names saved into checkpoints by the DataModule and read back without the data."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import torch
from quiet_trainer import quiet_trainer

from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.named_classes import stored_class_names
from vitlab.data.synthetic import write_image_tree
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.classification import ClassificationTask

TARGET = "vitlab.data.imagefolder.ImageFolderDataModule"


def test_a_checkpoint_keeps_the_class_names_after_the_data_is_gone(tmp_path: Path):
    root = tmp_path / "tree"
    write_image_tree(root, {"train": 4, "val": 1}, num_classes=2)
    (root / "LOC_synset_mapping.txt").write_text("class_0 tench\nclass_1 goldfish\n")
    datamodule = ImageFolderDataModule(root, img_size=16, batch_size=4, num_workers=0)
    vit = VisionTransformer(
        img_size=16, patch_size=8, num_classes=2, embed_dim=8, depth=1, num_heads=2
    )
    task = ClassificationTask(vit, functools.partial(torch.optim.SGD, lr=0.1), warmup_epochs=0)
    trainer = quiet_trainer(
        max_steps=1,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    shutil.rmtree(root)
    assert stored_class_names(tmp_path / "last.ckpt", TARGET) == ["tench", "goldfish"]


def test_a_checkpoint_without_names_gives_none(tmp_path: Path):
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    assert stored_class_names(tmp_path / "bare.ckpt", TARGET) is None
