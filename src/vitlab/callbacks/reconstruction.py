"""MAE reconstruction grids of fixed validation images, logged after every validation."""

from __future__ import annotations

import lightning as L
import torch
from torchvision.utils import make_grid

from vitlab.callbacks.image_grid import ValidationImageGrid
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


class ReconstructionGrid(ValidationImageGrid):
    """Reconstructs the first ``num_images`` validation images with a fixed mask seed.

    The grid goes to W&B (``val/reconstruction``) when a ``WandbLogger`` is attached, and to
    ``<default_root_dir>/reconstructions/epoch_NNN.png`` otherwise.
    """

    key, folder = "val/reconstruction", "reconstructions"

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1, seed: int = 0):
        super().__init__(num_images, every_n_epochs)
        self.seed = seed

    def draw(self, pl_module: L.LightningModule, images: torch.Tensor) -> tuple[torch.Tensor, str]:
        with torch.random.fork_rng(devices=[images.device.index] if images.is_cuda else []):
            torch.manual_seed(self.seed)
            panels = reconstruction_panels(pl_module.model, images).float().cpu()
        value_range = (images.min().item(), images.max().item())
        grid = make_grid(panels, nrow=4, normalize=True, value_range=value_range)
        return grid, "original | masked | reconstruction | visible + predicted"
