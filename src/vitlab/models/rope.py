"""2-D axial rotary position embeddings (RoPE) for ViT attention.

RoPE-ViT's ``rope-axial`` (Heo et al., ECCV 2024; timm's ``vit_*_patch16_rope_224``): each head's
query and key channels form pairs ``(x_{2i}, x_{2i+1})``, rotated by an angle proportional to the
patch's position. The first quarter of the frequencies' pairs turns with the patch's column, the
second with its row; frequencies are ``theta ** (-i / (head_dim / 4))`` with ``theta = 100``.
Rotating both q and k makes ``q . k`` depend on the relative offset between the two patches
only. The class token is not rotated. Nothing here is learned: the angles are a function of the
patch grid, so a model loads the same weights at any image size.
"""

from __future__ import annotations

import torch
from torch import nn

# RoPE-ViT's theta for images (its code's ``rope_theta``; timm's ``rope_temperature=100``)
ROPE_THETA = 100.0


def axial_angles(
    head_dim: int, grid_size: tuple[int, int], theta: float = ROPE_THETA
) -> torch.Tensor:
    """Rotation angle of every channel of every patch, (H*W, head_dim), rows of the grid in order.

    Channels ``2i`` and ``2i + 1`` share an angle: the column times frequency ``i`` for the first
    ``head_dim / 4`` pairs, the row times frequency ``i`` for the rest.
    """
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs a head dimension divisible by 4, got {head_dim}")
    num_freqs = head_dim // 4
    freqs = theta ** (-torch.arange(num_freqs, dtype=torch.float64) / num_freqs)
    rows, cols = torch.meshgrid(
        torch.arange(grid_size[0]), torch.arange(grid_size[1]), indexing="ij"
    )
    angles = torch.cat([cols.reshape(-1, 1) * freqs, rows.reshape(-1, 1) * freqs], dim=1)
    return angles.repeat_interleave(2, dim=1)


class AxialRotaryEmbedding(nn.Module):
    """Rotates the patch tokens of q or k, (B, heads, T, head_dim), leaving prefix tokens as is.

    One instance (the ``rope`` position encoding's, ``vitlab.models.pos_embed.Rotary``) serves
    every block; its sin/cos tables are buffers that a checkpoint does not store (they follow
    from the grid).
    """

    def __init__(self, head_dim: int, grid_size: tuple[int, int], num_prefix_tokens: int = 1):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        angles = axial_angles(head_dim, grid_size)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        self.register_buffer("cos", angles.cos().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, patches = x[..., : self.num_prefix_tokens, :], x[..., self.num_prefix_tokens :, :]
        # (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the pairs turned by 90 degrees
        turned = torch.stack([-patches[..., 1::2], patches[..., ::2]], dim=-1).flatten(-2)
        rotated = patches * self.cos + turned * self.sin
        return torch.cat([prefix, rotated.to(x.dtype)], dim=-2)
