"""MAE reconstruction grids of fixed validation images, logged after every validation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid, save_image

from vitlab.models.mae import MaskedAutoencoderViT


@torch.no_grad()
def reconstruction_panels(model: MaskedAutoencoderViT, images: torch.Tensor) -> torch.Tensor:
    """Per image: original | masked | reconstruction | visible + predicted, as (4B, C, H, W).

    With ``norm_pix_loss`` the prediction is per-patch normalised; it is mapped back to pixels
    with the mean and standard deviation of the true patch.
    """
    _, pred, mask = model(images)
    patches = model.patchify(images)
    if model.norm_pix_loss:
        mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    removed = mask[..., None]
    masked = model.unpatchify(patches * (1 - removed) + images.min() * removed)
    reconstruction = model.unpatchify(pred)
    pasted = model.unpatchify(patches * (1 - removed) + pred * removed)
    return torch.stack([images, masked, reconstruction, pasted], dim=1).flatten(0, 1)


class ReconstructionGrid(L.Callback):
    """Reconstructs the first ``num_images`` validation images with a fixed mask seed.

    The grid goes to W&B (``val/reconstruction``) when a ``WandbLogger`` is attached, and to
    ``<default_root_dir>/reconstructions/epoch_NNN.png`` otherwise.
    """

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1, seed: int = 0):
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.images: torch.Tensor | None = None

    def fixed_images(self, trainer: L.Trainer) -> torch.Tensor:
        if self.images is None:
            images, _ = next(iter(trainer.datamodule.val_dataloader()))
            self.images = images[: self.num_images]
        return self.images

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        images = self.fixed_images(trainer).to(pl_module.device)
        with torch.random.fork_rng(devices=[images.device.index] if images.is_cuda else []):
            torch.manual_seed(self.seed)
            panels = reconstruction_panels(pl_module.model, images).float().cpu()
        value_range = (images.min().item(), images.max().item())
        grid = make_grid(panels, nrow=4, normalize=True, value_range=value_range)
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if wandb is not None:
            caption = "original | masked | reconstruction | visible + predicted"
            wandb.log_image(
                "val/reconstruction", [grid], step=trainer.global_step, caption=[caption]
            )
            return
        path = Path(trainer.default_root_dir) / "reconstructions" / f"epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
