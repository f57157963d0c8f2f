"""Shared by the callbacks that picture fixed validation images after validation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import save_image


class ValidationImageGrid(L.Callback):
    """Every ``every_n_epochs`` epochs (rank 0), draws a grid for the first ``num_images``
    validation images and logs it: to W&B as ``key`` when a ``WandbLogger`` is attached, else
    as ``<default_root_dir>/<folder>/epoch_NNN.png``. Subclasses draw the grid."""

    key: str
    folder: str

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1):
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.images: torch.Tensor | None = None

    def draw(self, pl_module: L.LightningModule, images: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The (C, H, W) grid for these images and its caption."""
        raise NotImplementedError

    def fixed_images(self, trainer: L.Trainer) -> torch.Tensor:
        if self.images is None:
            # the loader's batch as the model sees it (e.g. RGB data normalises it on transfer)
            batch = next(iter(trainer.datamodule.val_dataloader()))
            images, _ = trainer.datamodule.on_after_batch_transfer(batch, 0)
            self.images = images[: self.num_images]
        return self.images

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        grid, caption = self.draw(pl_module, self.fixed_images(trainer).to(pl_module.device))
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if wandb is not None:
            wandb.log_image(self.key, [grid], step=trainer.global_step, caption=[caption])
            return
        path = Path(trainer.default_root_dir) / self.folder / f"epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
