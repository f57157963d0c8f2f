"""What a ViT attends to: attention rollout and class-token attention as patch grids.

Both read ``VisionTransformer.attention_maps`` (explicit softmax per block, (B, heads, T, T)).
Rollout (Abnar & Zuidema, 2020) follows attention through the residual stream: each block's
head-averaged attention gets the identity added for the skip connection, rows are
renormalised, and the blocks are multiplied from the first to the last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def attention_rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Joint attention of the last block's tokens over the input tokens: (B, T, T), rows sum to 1."""
    if not maps:
        raise ValueError("attention rollout needs the attention maps of at least one block")
    batch, _, tokens, _ = maps[0].shape
    identity = torch.eye(tokens, dtype=maps[0].dtype, device=maps[0].device)
    joint = identity.expand(batch, tokens, tokens)
    for attention in maps:
        residual = attention.mean(dim=1) + identity
        joint = (residual / residual.sum(dim=-1, keepdim=True)) @ joint
    return joint


def cls_attention_grid(
    attention: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """The class token's attention to the patches as a grid: (..., T, T) -> (..., gh, gw).

    Per-head maps (B, heads, T, T) give (B, heads, gh, gw); a rollout (B, T, T) gives (B, gh, gw).
    """
    return attention[..., 0, num_prefix_tokens:].unflatten(-1, grid_size)
