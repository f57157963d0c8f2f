"""The validation images a classifier gets wrong, as a W&B table at the end of training."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from PIL import Image

from vitlab.callbacks.image_grid import picture
from vitlab.loggers import WandbLogger

TABLE_KEY = "val/misclassified"
COLUMNS = ["image", "target", "predicted", "confidence"]


class MisclassifiedImages(L.Callback):
    """Keeps up to ``max_images`` misclassified images of each validation epoch (the logits
    ``validation_step`` returns) and, when fitting ends, logs the last epoch's to W&B as the
    table ``val/misclassified``: image, target and predicted class names, the predicted
    probability. Does nothing without a W&B logger, or for tasks whose targets are not class
    indices (MAE, segmentation). Each image is scaled to 8 bits (0-255) on its own for display:
    W&B casts a float image straight to uint8, which leaves a [0, 1] image black."""

    def __init__(self, max_images: int = 64):
        self.max_images = max_images
        self.rows: list[list[Any]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.rows = []

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, targets = batch
        room = self.max_images - len(self.rows)
        if trainer.sanity_checking or room <= 0 or not wandb_loggers(trainer):
            return
        if not isinstance(outputs, torch.Tensor) or targets.ndim != 1:
            return
        probabilities = outputs.float().softmax(dim=-1)
        confidence, predicted = probabilities.max(dim=-1)
        wrong = (predicted != targets).nonzero().flatten()[:room].tolist()
        names = class_names(trainer, outputs.shape[-1])
        for index in wrong:
            self.rows.append([
                display(images[index]),
                names[targets[index]],
                names[predicted[index]],
                round(confidence[index].item(), 4),
            ])  # fmt: skip

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import wandb

        for logger in wandb_loggers(trainer):
            rows = [[wandb.Image(row[0]), *row[1:]] for row in self.rows]
            logger.log_table(TABLE_KEY, columns=COLUMNS, data=rows)


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def class_names(trainer: L.Trainer, num_classes: int) -> list[str]:
    names = getattr(trainer.datamodule, "class_names", None)
    return list(names) if names else [str(index) for index in range(num_classes)]


def display(image: torch.Tensor) -> Image.Image:
    """A normalised (C, H, W) image as an 8-bit picture, its own range stretched to 0-255."""
    image = image.float()
    low, high = image.min(), image.max()
    return picture((image - low) / (high - low).clamp_min(1e-6))
