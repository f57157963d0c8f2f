"""Position embeddings: fixed 2-D sin-cos tables and resampling to a new patch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resample a (1, prefix + H*W, D) table to a new (H', W') grid, bicubic; prefix tokens kept."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_side = int(round(grid.shape[1] ** 0.5))
    if old_side * old_side != grid.shape[1]:
        raise ValueError(f"cannot infer a square grid from {grid.shape[1]} position embeddings")
    if (old_side, old_side) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_side, old_side, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid.to(prefix.dtype)], dim=1)
