"""Attention of fixed validation images, logged after every validation: where the model looks."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from vitlab.callbacks.image_grid import ValidationImageGrid
from vitlab.models.attention import attention_rollout, cls_attention_grid
from vitlab.models.vit import VisionTransformer


@torch.no_grad()
def attention_panels(
    model: VisionTransformer, images: torch.Tensor, block: int = -1
) -> torch.Tensor:
    """Per image: the image | rollout | class-token attention of each head of ``block``.

    Maps are upsampled (nearest: one square per patch) to the image size and repeated over its
    channels, giving (B * (2 + heads), C, H, W).
    """
    maps = [attention.float() for attention in model.attention_maps(images)]
    grid_size = model.patch_embed.grid_size
    rollout = cls_attention_grid(attention_rollout(maps), grid_size, model.num_prefix_tokens)
    heads = cls_attention_grid(maps[block], grid_size, model.num_prefix_tokens)
    grids = torch.cat([rollout[:, None], heads], dim=1)
    upsampled = F.interpolate(grids, size=images.shape[-2:], mode="nearest")
    channels = images.shape[1]
    tiles = upsampled[:, :, None].expand(-1, -1, channels, -1, -1)
    return torch.cat([images.float()[:, None], tiles], dim=1).flatten(0, 1)


class AttentionMaps(ValidationImageGrid):
    """Attention rollout and the per-head class-token attention of one block for the first
    ``num_images`` validation images, one row per image, every ``every_n_epochs`` epochs.

    The grid goes to W&B (``val/attention``) when a ``WandbLogger`` is attached, and to
    ``<default_root_dir>/attention/epoch_NNN.png`` otherwise. Each tile is scaled to its own
    range, so the maps show where attention goes, not how peaked it is across images.
    """

    key, folder = "val/attention", "attention"

    def __init__(self, num_images: int = 8, every_n_epochs: int = 1, block: int = -1):
        super().__init__(num_images, every_n_epochs)
        self.block = block

    def draw(self, pl_module: L.LightningModule, images: torch.Tensor) -> tuple[torch.Tensor, str]:
        panels = attention_panels(pl_module.model, images, self.block).cpu()
        grid = make_grid(
            panels, nrow=panels.shape[0] // images.shape[0], normalize=True, scale_each=True
        )
        return grid, f"image | rollout | class-token attention per head of block {self.block}"
