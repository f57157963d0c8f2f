"""Position encodings of a ViT: the ``pos_embed`` choices, fixed 2-D sin-cos tables, resampling
a table to a new patch grid, and CPVT's position-encoding generator.

``pos_embed`` (``VisionTransformer``'s argument, ``model.pos_embed`` in the config):

- ``learned``: a learned table added to the tokens (ViT, DeiT);
- ``sincos``: the same table, fixed to 2-D sin-cos values (MAE);
- ``relative``: no table; a learned bias per head for each 2-D offset, in every block's attention
  (BEiT; ``vitlab.models.relative_position``);
- ``conditional``: no table; CPVT's ``PositionEncodingGenerator`` after the first block;
- ``rope``: no table; 2-D axial rotary embeddings of q and k (RoPE-ViT; ``vitlab.models.rope``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PosEmbed = Literal["learned", "sincos", "relative", "conditional", "rope"]
POS_EMBEDS: tuple[str, ...] = ("learned", "sincos", "relative", "conditional", "rope")
# the choices that add a (1, 1 + H*W, D) table to the tokens
ABSOLUTE_POS_EMBEDS = ("learned", "sincos")


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sin-cos embedding of 1-D positions: (N,) -> (N, embed_dim), sines first then cosines."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(embed_dim: int, grid_size: tuple[int, int], cls_token: bool = False) -> torch.Tensor:
    """Fixed 2-D sin-cos table of shape (1, [1 +] H*W, embed_dim), row-major over the grid.

    As in the MAE release: the first half of the channels encodes the column, the second half
    the row; the class token (when asked for) gets the all-zero embedding.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid_size[0]), torch.arange(grid_size[1]), indexing="ij"
    )
    table = torch.cat(
        [sincos_1d(embed_dim // 2, cols.flatten()), sincos_1d(embed_dim // 2, rows.flatten())],
        dim=1,
    )
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim, dtype=table.dtype), table], dim=0)
    return table.float().unsqueeze(0)


def resample(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    offset: float = 0.0,
) -> torch.Tensor:
    """Resample a (1, prefix + H*W, D) table to a new (H', W') grid, bicubic; prefix tokens kept.

    ``offset`` > 0 interpolates as DINO's and iBOT's ``interpolate_pos_encoding`` do: by a scale
    factor of ``(new + offset) / old`` per axis, which samples the table at slightly other
    places than a resize to the new size (timm's ``resample_abs_pos_embed``, ``offset`` 0)."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_side = int(round(grid.shape[1] ** 0.5))
    if old_side * old_side != grid.shape[1]:
        raise ValueError(f"cannot infer a square grid from {grid.shape[1]} position embeddings")
    if (old_side, old_side) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_side, old_side, dim).permute(0, 3, 1, 2).float()
    if offset:
        scale = tuple((new + offset) / old_side for new in new_grid)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    else:
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid.to(prefix.dtype)], dim=1)


class PositionEncodingGenerator(nn.Module):
    """CPVT's PEG (Chu et al., ICLR 2023): the patch tokens laid out on their grid plus a 3x3
    depthwise convolution of themselves (zero padding, which lets it infer absolute positions);
    prefix tokens pass through. Its ``proj`` has one weight per channel, so it applies at any
    grid size.

    The release's ``PosCNN`` (timm's ``twins.PosConv`` at stride 1), placed after the first block.
    """

    def __init__(self, embed_dim: int, grid_size: tuple[int, int], num_prefix_tokens: int = 1):
        super().__init__()
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens
        self.proj = nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, groups=embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        grid = patches.transpose(1, 2).unflatten(-1, self.grid_size)
        patches = (grid + self.proj(grid)).flatten(2).transpose(1, 2)
        return torch.cat([prefix, patches], dim=1)
