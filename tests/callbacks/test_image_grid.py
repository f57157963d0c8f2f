"""Validation image grids (MAE reconstructions, attention maps) from real Trainers: one 8-bit
picture, the same in the PNG W&B writes and in the PNG written without W&B."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import wandb
from PIL import Image
from torchvision.utils import save_image

from vitlab.callbacks.attention import AttentionMaps
from vitlab.callbacks.image_grid import ValidationImageGrid, picture
from vitlab.callbacks.reconstruction import ReconstructionGrid
from vitlab.data.base import Batch
from vitlab.data.digits import DigitsDataModule
from vitlab.loggers import WandbLogger, finish_loggers
from vitlab.tasks.classification import ClassificationTask
from vitlab.tasks.mae import MAEPretrainTask


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """W&B as a new user has it (no WANDB_* variables, a home of its own); the run finished."""
    for name in [name for name in os.environ if name.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield
    finish_loggers()
    wandb.teardown()  # wandb.finish returns before wandb-core has written the run's files


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("method", ["reconstruction", "attention"])
def test_wandb_gets_the_8bit_grid_that_the_png_path_writes(
    offline_wandb,
    tmp_path,
    method,
    mae_config,
    vit_config,
    optimizer_config,
    quiet_trainer,
    task_recipe,
):
    def train(root: Path, logger: WandbLogger | None) -> None:
        L.seed_everything(0, verbose=False)
        if method == "reconstruction":
            task = MAEPretrainTask(
                mae_config(mask_ratio=0.5),
                optimizer_config(),
                **task_recipe("mae_pretrain", warmup_epochs=0),
            )
            callback: ValidationImageGrid = ReconstructionGrid(num_images=4)
        else:
            task = ClassificationTask(
                vit_config(), optimizer_config(), **task_recipe("classification", warmup_epochs=0)
            )
            callback = AttentionMaps(num_images=4)
        trainer = quiet_trainer(
            default_root_dir=root,
            logger=logger or False,
            max_epochs=1,
            limit_train_batches=2,
            limit_val_batches=1,
            callbacks=[callback],
        )
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=8))

    logger = WandbLogger(offline=True, save_dir=tmp_path / "wandb_run", project="vitlab")
    train(tmp_path / "wandb_run", logger)
    finish_loggers()
    wandb.teardown()
    train(tmp_path / "png_run", None)

    key, folder = (
        ("reconstruction", "reconstructions")
        if method == "reconstruction"
        else ("attention", "attention")
    )
    (logged,) = (tmp_path / "wandb_run").glob(
        f"wandb/offline-run-*/files/media/images/val/{key}_*.png"
    )
    written = tmp_path / "png_run" / folder / "epoch_000.png"
    assert not (tmp_path / "wandb_run" / folder).exists()  # with W&B attached, only W&B gets it
    logged_pixels = pixels(logged)
    assert (logged_pixels.min(), logged_pixels.max()) == (0, 255)
    assert len(np.unique(logged_pixels)) > 16
    np.testing.assert_array_equal(logged_pixels, pixels(written))


class MirroringDigits(DigitsDataModule):
    """Mirrors every batch once it is on the device, after the batch step."""

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, targets = super().on_after_batch_transfer(batch, dataloader_idx)
        return images.flip(-1), targets


def test_the_images_are_the_first_validation_batch_as_delivered_and_stay_fixed(
    tmp_path, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    datamodule = MirroringDigits(batch_size=8)
    callback = AttentionMaps(num_images=3)
    trainer = quiet_trainer(
        default_root_dir=tmp_path, max_epochs=2, limit_train_batches=2, callbacks=[callback]
    )
    trainer.fit(
        ClassificationTask(vit_config(), optimizer_config(), **task_recipe("classification")),
        datamodule=datamodule,
    )
    first_batch = next(iter(datamodule.val_dataloader()))
    delivered, _ = datamodule.on_after_batch_transfer(first_batch, 0)
    assert torch.equal(callback.images, delivered[:3])
    assert torch.equal(delivered, datamodule.batch_step(first_batch, train=False)[0].flip(-1))
    first, second = (pixels(tmp_path / "attention" / f"epoch_{n:03d}.png") for n in (0, 1))
    # the first tile of each row is the image itself (8x8 tiles after 2 pixels of padding)
    np.testing.assert_array_equal(first[:, :10], second[:, :10])
    assert not np.array_equal(first, second)  # the attention changed with training


def test_a_grid_becomes_an_8bit_picture_rounded_like_save_image(tmp_path):
    grid = torch.linspace(0, 1, 3 * 4 * 5).view(3, 4, 5)
    save_image(grid, tmp_path / "torchvision.png")
    np.testing.assert_array_equal(np.asarray(picture(grid)), pixels(tmp_path / "torchvision.png"))
