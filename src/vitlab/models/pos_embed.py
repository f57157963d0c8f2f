"""Position encodings of a ViT: one small module per ``pos_embed`` choice, fixed 2-D sin-cos
tables, resampling a table to a new patch grid, and CPVT's position-encoding generator.

``pos_embed`` (``VisionTransformer``'s argument, ``model.pos_embed`` in the config) picks a
``PositionEncoding`` once, at construction (``POSITION_ENCODINGS``):

- ``learned`` (``LearnedTable``): a learned table added to the tokens (ViT, DeiT);
- ``sincos`` (``SinCosTable``): the same table, fixed to 2-D sin-cos values (MAE);
- ``relative`` (``RelativeBias``): no table; a learned bias per head for each 2-D offset, in
  every block's attention (BEiT; ``vitlab.models.relative_position``);
- ``conditional`` (``Conditional``): no table; CPVT's ``PositionEncodingGenerator`` after the
  first block;
- ``rope`` (``Rotary``): no table; 2-D axial rotary embeddings of q and k (RoPE-ViT;
  ``vitlab.models.rope``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.errors import UserError
from vitlab.models.relative_position import (
    num_relative_positions,
    relative_position_bias,
    relative_position_index,
)
from vitlab.models.rope import AxialRotaryEmbedding

PosEmbed = Literal["learned", "sincos", "relative", "conditional", "rope"]


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
    old_grid: tuple[int, int] | None = None,
    offset: float = 0.0,
) -> torch.Tensor:
    """Resample a (1, prefix + H*W, D) table to a new (H', W') grid, bicubic; prefix tokens kept.
    ``old_grid`` is the table's (H, W); None: a square grid, inferred from the table's length.

    ``offset`` > 0 interpolates as DINO's and iBOT's ``interpolate_pos_encoding`` do: by a scale
    factor of ``(new + offset) / old`` per axis, which samples the table at slightly other
    places than a resize to the new size (timm's ``resample_abs_pos_embed``, ``offset`` 0)."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_grid is None:
        side = int(round(grid.shape[1] ** 0.5))
        if side * side != grid.shape[1]:
            raise ValueError(f"cannot infer a square grid from {grid.shape[1]} position embeddings")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2).float()
    if offset:
        scale = tuple((new + offset) / old for new, old in zip(new_grid, old_grid, strict=True))
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


class PositionEncoding(nn.Module):
    """Where a ViT asks its position encoding; each hook here answers as a variant that does
    nothing at that place, and each ``pos_embed`` choice overrides the hooks it uses:

    - ``table``, ``init_table``, ``add``: a table added to the [prefix, patches] tokens (the ViT
      registers it as ``pos_embed``, timm's name); ``add`` resamples it to the input's grid;
    - ``bias_table``, ``bias``: each attention's learned table (``relative_position_bias_table``)
      and the bias (heads, T, T) it adds to the attention logits;
    - ``rotate``: q or k, (B, heads, T, head_dim), turned by the tokens' positions;
    - ``generator``: a module the first block applies to its output (CPVT's ``peg``).

    One instance per ViT, shared by its attention blocks; it stores nothing in a checkpoint. The
    learned tensors it makes are registered by their owners under timm's names, so checkpoints
    keep their keys. Only a table follows another patch grid; the other variants encode
    ``grid_size`` alone.
    """

    name: str

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        grid_size: tuple[int, int],
        num_prefix_tokens: int = 1,
    ):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.grid_size = grid_size
        self.num_prefix_tokens = num_prefix_tokens

    def table(self) -> nn.Parameter | None:
        return None

    def init_table(self, table: nn.Parameter | None) -> None:
        """Initialises ``table()``'s parameter (at the ViT's initialisation)."""

    def add(
        self,
        tokens: torch.Tensor,
        table: nn.Parameter | None,
        grid: tuple[int, int],
        offset: float = 0.0,
    ) -> torch.Tensor:
        """[prefix, patches] tokens (B, prefix + H*W, D) of an input with patch grid ``grid``,
        position-encoded by ``table`` (resampled with ``offset``, see ``resample``)."""
        if tuple(grid) != self.grid_size:
            raise UserError(
                f"model.pos_embed={self.name} encodes the {self.grid_size} patch grid only, not "
                f"{tuple(grid)}: use learned or sincos (iBOT's local crops: or "
                "data.multi_crop.local_crops=0)"
            )
        return tokens

    def bias_table(self) -> nn.Parameter | None:
        return None

    def bias(self, table: nn.Parameter | None) -> torch.Tensor | None:
        return None

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def generator(self) -> nn.Module | None:
        return None


class LearnedTable(PositionEncoding):
    """A learned (1, prefix + H*W, D) table, truncated-normal at std 0.02 (timm), added to the
    tokens; resampled bicubic to another grid."""

    name = "learned"
    trained = True

    def table(self) -> nn.Parameter:
        length = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        return nn.Parameter(torch.zeros(1, length, self.embed_dim), requires_grad=self.trained)

    def init_table(self, table: nn.Parameter) -> None:
        nn.init.trunc_normal_(table, std=0.02)

    def add(
        self,
        tokens: torch.Tensor,
        table: nn.Parameter,
        grid: tuple[int, int],
        offset: float = 0.0,
    ) -> torch.Tensor:
        return tokens + resample(table, grid, self.num_prefix_tokens, self.grid_size, offset)


class SinCosTable(LearnedTable):
    """The table fixed to ``sincos_2d`` values (the class token's all zero), not trained (MAE)."""

    name = "sincos"
    trained = False

    def init_table(self, table: nn.Parameter) -> None:
        table.data.copy_(sincos_2d(self.embed_dim, self.grid_size, cls_token=True))


class RelativeBias(PositionEncoding):
    """BEiT's relative position bias: every attention's own table (zeros at the start), indexed
    by the (query, key) pairs' offsets (``vitlab.models.relative_position``)."""

    name = "relative"

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        grid_size: tuple[int, int],
        num_prefix_tokens: int = 1,
    ):
        super().__init__(embed_dim, num_heads, grid_size, num_prefix_tokens)
        index = relative_position_index(grid_size)
        self.register_buffer("relative_position_index", index, persistent=False)

    def bias_table(self) -> nn.Parameter:
        return nn.Parameter(torch.zeros(num_relative_positions(self.grid_size), self.num_heads))

    def bias(self, table: nn.Parameter) -> torch.Tensor:
        return relative_position_bias(table, self.relative_position_index)


class Conditional(PositionEncoding):
    """CPVT: a ``PositionEncodingGenerator`` after the first block."""

    name = "conditional"

    def generator(self) -> PositionEncodingGenerator:
        return PositionEncodingGenerator(self.embed_dim, self.grid_size, self.num_prefix_tokens)


class Rotary(PositionEncoding):
    """RoPE-ViT's axial rotary embedding of every head's q and k (``vitlab.models.rope``)."""

    name = "rope"

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        grid_size: tuple[int, int],
        num_prefix_tokens: int = 1,
    ):
        super().__init__(embed_dim, num_heads, grid_size, num_prefix_tokens)
        self.rope = AxialRotaryEmbedding(embed_dim // num_heads, grid_size, num_prefix_tokens)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return self.rope(x)


POSITION_ENCODINGS: dict[str, type[PositionEncoding]] = {
    variant.name: variant
    for variant in (LearnedTable, SinCosTable, RelativeBias, Conditional, Rotary)
}
POS_EMBEDS: tuple[str, ...] = tuple(POSITION_ENCODINGS)
