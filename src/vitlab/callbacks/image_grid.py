"""Shared by the callbacks that picture fixed validation images after validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image


class ValidationImageGrid(L.Callback):
    """Every ``every_n_epochs`` epochs (rank 0), draws a grid for the first ``num_images``
    validation images and logs it: to W&B as ``key`` when a ``WandbLogger`` is attached, else
    as ``<default_root_dir>/<folder>/epoch_NNN.png``. Subclasses draw the grid.

    The images are those of the first validation batch as Lightning delivers it (on the device,
    after the DataModule's ``on_after_batch_transfer``), kept for the rest of the run. Both
    destinations get the same 8-bit picture (``picture``): W&B would otherwise cast a float grid
    straight to uint8, leaving only the values 0 and 1.
    """

    key: str
    folder: str

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1):
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.images: torch.Tensor | None = None

    def draw(self, pl_module: L.LightningModule, images: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The (C, H, W) grid for these images, values in [0, 1], and its caption."""
        raise NotImplementedError

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.images is None:
            images, _ = batch
            self.images = images[: self.num_images].detach().clone()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        assert self.images is not None, "on_validation_batch_start keeps the first batch"
        grid, caption = self.draw(pl_module, self.images.to(pl_module.device))
        image = picture(grid)
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if wandb is not None:
            wandb.log_image(self.key, [image], step=trainer.global_step, caption=[caption])
            return
        path = Path(trainer.default_root_dir) / self.folder / f"epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def picture(grid: torch.Tensor) -> Image.Image:
    """A (C, H, W) grid with values in [0, 1] as an 8-bit image, rounded like torchvision's
    ``save_image``."""
    pixels = grid.detach().mul(255).add_(0.5).clamp_(0, 255).to("cpu", torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).squeeze(-1).numpy())
