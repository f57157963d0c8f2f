"""BEiT's relative position bias (Bao et al., ICLR 2022; after Swin): a learned bias per head
for every 2-D offset between two patches, added to the attention logits.

A grid of H x W patches has (2H - 1)(2W - 1) offsets; the table holds one row per offset plus
three for the class token (class -> patch, patch -> class, class -> class), in BEiT's order.
Each block has its own table (BEiT's ``use_rel_pos_bias``), under timm's name
``blocks.N.attn.relative_position_bias_table``; the index, which follows from the grid, is the
``relative`` position encoding's (``vitlab.models.pos_embed.RelativeBias``) and not stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_CLASS_TOKEN_ENTRIES = 3


def num_relative_positions(grid_size: tuple[int, int]) -> int:
    """Rows of the bias table: every 2-D offset, plus the three class-token entries."""
    return (2 * grid_size[0] - 1) * (2 * grid_size[1] - 1) + NUM_CLASS_TOKEN_ENTRIES


def relative_position_index(grid_size: tuple[int, int]) -> torch.Tensor:
    """Table row of every (query, key) pair of [class, patches]: (1 + H*W, 1 + H*W), long.

    BEiT's ``gen_relative_position_index``: patch pairs index their offset
    (dy + H - 1) * (2W - 1) + (dx + W - 1); the class token's row, column and corner take the last
    three rows of the table.
    """
    height, width = grid_size
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    patch_index = (offsets[0] + height - 1) * (2 * width - 1) + offsets[1] + width - 1
    size = num_relative_positions(grid_size)
    index = torch.zeros(height * width + 1, height * width + 1, dtype=torch.long)
    index[1:, 1:] = patch_index
    index[0, :] = size - 3  # class token to patches
    index[:, 0] = size - 2  # patches to class token
    index[0, 0] = size - 1
    return index


def relative_position_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The bias of every (query, key) pair, per head: (heads, T, T) from (rows, heads) and (T, T)."""
    return table[index].permute(2, 0, 1)


def resample_table(table: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """A (rows, heads) table of a square grid resampled to ``new_grid``: the offsets' plane
    bicubic (corners not aligned), the class-token rows kept.

    timm's ``resize_rel_pos_bias_table_simple``; BEiT's fine-tuning script interpolates the
    same plane with scipy's cubic spline on geometrically spaced offsets instead.
    """
    size = num_relative_positions(new_grid)
    if table.shape[0] == size:
        return table
    plane, class_rows = table[:-NUM_CLASS_TOKEN_ENTRIES], table[-NUM_CLASS_TOKEN_ENTRIES:]
    side = int(round(plane.shape[0] ** 0.5))
    if side * side != plane.shape[0] or side % 2 == 0:
        raise ValueError(
            f"cannot infer a square patch grid from a relative position table of {table.shape[0]} rows"
        )
    heads = table.shape[1]
    new_side = (2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    plane = plane.T.reshape(1, heads, side, side).float()
    plane = F.interpolate(plane, size=new_side, mode="bicubic", align_corners=False)
    plane = plane.reshape(heads, -1).T.to(table.dtype)
    return torch.cat([plane, class_rows], dim=0)
