"""Vision Transformer (Dosovitskiy et al., 2021) with timm-compatible parameter names.

Pre-norm encoder of multi-head self-attention and GELU-MLP blocks over patch tokens plus a
class token. Attention runs through ``F.scaled_dot_product_attention`` (fused kernels); the
explicit softmax path is only used when attention maps are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from vitlab.models.pos_embed import (
    POS_EMBEDS,
    POSITION_ENCODINGS,
    PosEmbed,
    PositionEncoding,
)

Size2d = int | Sequence[int]
# every norm of the standard ViT (timm, the MAE release)
LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def to_2tuple(size: Size2d) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def patch_grid(img_size: Size2d, patch_size: Size2d) -> tuple[int, int]:
    """Number of patches along each side; a clear error when the patch does not tile the image."""
    (height, width), (ph, pw) = to_2tuple(img_size), to_2tuple(patch_size)
    if min(height, width, ph, pw) < 1:
        raise ValueError(f"image size {height}x{width} and patch size {ph}x{pw} must be positive")
    if height % ph or width % pw:
        divisors = [
            p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0
        ]
        raise ValueError(
            f"patch size {ph}x{pw} does not divide image size {height}x{width}; "
            f"patch sizes that do: {divisors}"
        )
    return height // ph, width // pw


class PatchEmbed(nn.Module):
    """Non-overlapping patches, linearly projected: (B, C, H, W) -> (B, N, D), for any image
    size the patch tiles (``img_size`` and ``grid_size`` are the model's own)."""

    def __init__(self, img_size: Size2d, patch_size: Size2d, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = patch_grid(self.img_size, self.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    ``position`` (the ViT's ``PositionEncoding``, shared by its blocks) may rotate q and k
    (``rope``) and bias the logits (``relative``: this attention's own
    ``relative_position_bias_table``, passed to the fused kernel as its additive mask).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        position: PositionEncoding | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.position = position
        self.relative_position_bias_table = None if position is None else position.bias_table()

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.position is not None:
            q, k = self.position.rotate(q), self.position.rotate(k)
        return q, k, v

    def position_bias(self) -> torch.Tensor | None:
        """The relative position bias added to the logits, (heads, T, T), or None."""
        if self.position is None:
            return None
        return self.position.bias(self.relative_position_bias_table)

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); with ``num_queries`` only the first that many tokens attend
        (to all T keys and values) and come out: (B, num_queries, D)."""
        q, k, v = self._split_heads(x)
        bias = self.position_bias()
        if num_queries is not None:
            q = q[:, :, :num_queries]
            bias = None if bias is None else bias[:, :num_queries]
        if bias is not None:
            bias = bias.to(q.dtype)
        dropout = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        return self.proj(out.transpose(1, 2).flatten(2))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(QK^T / sqrt(d) + bias) per head: (B, heads, T, T). Explicit, for inspection
        only."""
        q, k, _ = self._split_heads(x)
        logits = q @ k.transpose(-2, -1) * self.scale
        bias = self.position_bias()
        return (logits if bias is None else logits + bias).softmax(dim=-1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """A learnable per-channel gain on a residual branch (CaiT, Touvron et al. 2021), started at
    ``init_value``: deep blocks begin near the identity. timm's name: ``gamma``."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)), with drop path.

    ``position`` goes to its ``Attention``; ``peg`` (the position encoding's ``generator``, CPVT's
    in the first block only) is applied to the block's output. ``layer_scale_init``
    scales each branch by a ``LayerScale`` (``ls1``, ``ls2``, timm's names) started at that
    value; None: no scaling, no parameters.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        position: PositionEncoding | None = None,
        peg: nn.Module | None = None,
        layer_scale_init: float | None = None,
    ):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, position)
        self.ls1 = nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.peg = peg

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """``num_queries``: update and return only the first that many tokens (which still
        attend to every token), e.g. the class token in a classifier's last block."""
        residual = x if num_queries is None else x[:, :num_queries]
        x = residual + self.drop_path(self.ls1(self.attn(self.norm1(x), num_queries)))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        # with num_queries only prefix tokens come out, which the PEG passes through unchanged
        return x if self.peg is None or num_queries is not None else self.peg(x)


class Blocks(nn.Sequential):
    """Transformer blocks applied in turn. With ``grad_checkpointing`` (while gradients are
    recorded), each block keeps only its input for the backward pass and recomputes its
    activations there (``torch.utils.checkpoint``, non-reentrant, random state replayed so
    dropout and stochastic depth draw the same): memory per block falls from every intermediate
    activation to one token tensor, for about one more forward of compute (timm's
    ``set_grad_checkpointing``). ``benchmarks/grad_checkpointing.py`` measures the memory.
    """

    grad_checkpointing = False

    def forward(self, x: torch.Tensor, last_queries: int | None = None) -> torch.Tensor:
        """``last_queries``: the last block updates only the first that many tokens."""
        checkpointed = self.grad_checkpointing and torch.is_grad_enabled()
        for index, block in enumerate(self):
            queries = last_queries if index == len(self) - 1 else None
            if checkpointed:
                x = checkpoint(block, x, queries, use_reentrant=False)
            else:
                x = block(x, queries)
        return x


class PatchTokens:
    """``prepare_tokens``, the one place a ViT encoder's tokens are made, for the modules that
    hold the encoder's parts under timm's names at their top level: ``VisionTransformer``, and
    MAE's ``MaskedAutoencoderViT``, which keeps them there as the release does."""

    num_prefix_tokens = 1
    patch_embed: PatchEmbed
    cls_token: nn.Parameter
    pos_embed: nn.Parameter | None
    position: PositionEncoding
    pos_drop: nn.Module

    def prepare_tokens(
        self,
        images: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        interpolate_offset: float = 0.0,
    ) -> torch.Tensor:
        """The tokens the blocks take, (B, 1 + N, D), from images of any size the patch tiles
        (dinov2's ``prepare_tokens_with_masks``, timm's ``_pos_embed``): the patch embeddings,
        ``mask_token`` (D,) in place of those where ``mask`` (B, N) is True (iBOT's masked
        patches), the class token before them, the position encoding (a table resampled to the
        images' patch grid), then with ``keep`` (B, K) only the patches it indexes, in its order
        (MAE's visible patches): (B, 1 + K, D). ``interpolate_offset`` > 0 resamples the table as
        DINO's and iBOT's ``interpolate_pos_encoding`` do (``pos_embed.resample``)."""
        grid = patch_grid(images.shape[-2:], self.patch_embed.patch_size)
        patches = self.patch_embed(images)
        if mask is not None:
            patches = torch.where(mask[..., None], mask_token.to(patches.dtype), patches)
        cls = self.cls_token.expand(images.shape[0], -1, -1)  # len() would fix the batch in export
        tokens = torch.cat([cls, patches], dim=1)
        tokens = self.position.add(tokens, self.pos_embed, grid, interpolate_offset)
        if keep is not None:
            prefix, patches = (
                tokens[:, : self.num_prefix_tokens],
                tokens[:, self.num_prefix_tokens :],
            )
            patches = patches.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
            tokens = torch.cat([prefix, patches], dim=1)
        return self.pos_drop(tokens)


class VisionTransformer(PatchTokens, nn.Module):
    """ViT classifier. ``num_classes=0`` gives a feature extractor (``head`` is the identity).

    ``global_pool="token"`` classifies the class token after the final ``norm``;
    ``global_pool="avg"`` averages the patch tokens and normalises them with ``fc_norm``
    (the final ``norm`` is then the identity, as in timm and the MAE fine-tuning recipe).
    ``pos_embed`` chooses the position encoding, ``position`` (``vitlab.models.pos_embed``); only
    ``learned`` and ``sincos`` have a ``pos_embed`` table, which is None otherwise.
    ``layer_scale_init`` (None: off) gives every block's branches a ``LayerScale`` started at
    that value (CaiT, DeiT III, BEiT, EVA). Tokens come from ``prepare_tokens``.
    """

    def __init__(
        self,
        img_size: Size2d = 224,
        patch_size: Size2d = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        global_pool: Literal["token", "avg"] = "token",
        pos_embed: PosEmbed = "learned",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if pos_embed not in POSITION_ENCODINGS:
            raise ValueError(
                f"pos_embed: expected one of {', '.join(POS_EMBEDS)}; got {pos_embed!r}"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.mlp_ratio = mlp_ratio
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.position = POSITION_ENCODINGS[pos_embed](
            embed_dim, num_heads, self.patch_embed.grid_size, self.num_prefix_tokens
        )
        self.pos_embed = self.position.table()
        self.pos_drop = nn.Dropout(drop_rate)
        # stochastic depth grows linearly with depth, from 0 to drop_path_rate
        drop_paths = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = Blocks(
            *(
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    dp,
                    position=self.position,
                    peg=self.position.generator() if i == 0 else None,
                    layer_scale_init=layer_scale_init,
                )
                for i, dp in enumerate(drop_paths)
            )
        )
        self.blocks.grad_checkpointing = grad_checkpointing
        use_fc_norm = global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else LayerNorm(embed_dim)
        self.fc_norm = LayerNorm(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def pos_embed_type(self) -> str:
        """The ``pos_embed`` choice (``model.pos_embed``) this model was built with."""
        return self.position.name

    def _init_weights(self) -> None:
        self.position.init_table(self.pos_embed)
        nn.init.normal_(self.cls_token, std=0.02)
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        self.apply(init_linear_and_norm)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides biases and norms: the tokens, the
        position table, and (as BEiT and CPVT) relative position tables and the PEG."""
        position = {
            name
            for name, _ in self.named_parameters()
            if name.endswith("relative_position_bias_table") or ".peg." in name
        }
        return {"cls_token", "pos_embed"} | position

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block (``Blocks``), as timm's models switch it."""
        self.blocks.grad_checkpointing = enable

    def forward_features(self, images: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """All tokens after the encoder: (B, 1 + N, D). With ``cls_only`` just the class token,
        (B, 1, D): the last block then updates that token alone, which saves most of that block's
        compute and gives the same class token (``benchmarks/vit_vs_timm.py`` measures it)."""
        tokens = self.prepare_tokens(images)
        return self.norm(self.blocks(tokens, self.num_prefix_tokens if cls_only else None))

    def forward_intermediates(
        self, images: torch.Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[torch.Tensor]:
        """Patch-token maps (B, D, grid_h, grid_w) after the blocks ``indices`` names, in block
        order: an int ``n`` takes the last ``n`` blocks, a sequence takes those block indices
        (negative ones count from the end). ``norm`` applies the final ``norm`` to each map. The
        blocks after the last one taken are not run. timm's
        ``forward_intermediates(images, indices, norm=norm, intermediates_only=True)``."""
        take = take_indices(indices, self.depth)
        tokens = self.prepare_tokens(images)
        grid_h, grid_w = patch_grid(images.shape[-2:], self.patch_embed.patch_size)
        maps = []
        for index, block in enumerate(self.blocks[: max(take) + 1]):
            tokens = block(tokens)
            if index in take:
                patches = (self.norm(tokens) if norm else tokens)[:, self.num_prefix_tokens :]
                maps.append(patches.transpose(1, 2).reshape(len(images), -1, grid_h, grid_w))
        return maps

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            pooled = tokens[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            pooled = tokens[:, 0]
        pooled = self.head_drop(self.fc_norm(pooled))
        return pooled if pre_logits else self.head(pooled)

    def pre_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features the head reads, (B, D): what k-NN and probes classify."""
        # token pooling reads the class token only: the patch tokens' last update is skipped
        cls_only = self.global_pool == "token" and self.depth > 0
        return self.forward_head(self.forward_features(images, cls_only=cls_only), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_logits(images))

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every block, each (B, heads, T, T), computed explicitly."""
        tokens = self.prepare_tokens(images)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.attention_weights(block.norm1(tokens)))
            tokens = block(tokens)
        return maps


def take_indices(indices: int | Sequence[int], depth: int) -> list[int]:
    """Block indices in ``[0, depth)``: the last ``indices`` blocks for an int, else each index
    (negative ones from the end); a clear error for any outside the model."""
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"cannot take the last {indices} blocks of a ViT of depth {depth}")
        return list(range(depth - indices, depth))
    taken = [index % depth if -depth <= index < depth else None for index in indices]
    if not taken or None in taken:
        raise ValueError(f"block indices {list(indices)} must lie in [-{depth}, {depth})")
    return sorted(set(taken))


def init_linear_and_norm(module: nn.Module) -> None:
    """timm's ViT init: truncated-normal Linear weights (std 0.02), zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
