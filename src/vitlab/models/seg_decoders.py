"""Segmentation decoders over a ViT's patch-token maps (see ``vitlab.models.segmenter``).

Each takes ``embed_dim`` (the backbone's width), ``num_classes`` and ``patch_size``, reads the
blocks its ``layers`` names, and returns logits at the image size:

- ``LinearDecoder``: Segmenter's linear decoder, each patch classified on its own, the patch
  logits upsampled bilinearly; it cannot draw a boundary finer than a patch.
- ``ProgressiveUpsamplingDecoder``: SETR-PUP, conv + BatchNorm + ReLU + 2x bilinear upsampling
  until the patch grid reaches the pixels, then a 1x1 classifier: boundaries within a patch.
- ``MaskTransformerDecoder``: Segmenter's mask transformer, learned class embeddings attend
  jointly with the patch tokens; each class mask is the scalar product of patch and class
  embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.models.vit import Block, LayerNorm, init_linear_and_norm


def tokens_of(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B, h * w, D)."""
    return feature_map.flatten(2).transpose(1, 2)


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def patch_logits_to_pixels(
    logits: torch.Tensor, grid: torch.Size | tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Per-patch logits (B, h * w, K) -> (B, K, H, W): laid out on the ``grid`` of patches,
    then upsampled bilinearly to the image ``size``."""
    return upsample(logits.transpose(1, 2).unflatten(2, tuple(grid)), size)


class LinearDecoder(nn.Module):
    """Per-patch classifier of the last block's tokens: LayerNorm, then a GELU hidden layer of
    ``hidden_dim`` units when ``hidden_dim > 0``, then a linear layer to the classes. The norm is
    needed when the backbone pools by averaging: its final ``norm`` is then the identity and the
    patch tokens come out unnormalised."""

    layers = 1

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        patch_size: Sequence[int] = (16, 16),
        hidden_dim: int = 0,
    ):
        super().__init__()
        self.norm = LayerNorm(embed_dim)
        self.hidden = (
            nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU())
            if hidden_dim > 0
            else nn.Identity()
        )
        self.head = nn.Linear(hidden_dim if hidden_dim > 0 else embed_dim, num_classes)
        self.apply(init_linear_and_norm)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        (feature_map,) = features
        logits = self.head(self.hidden(self.norm(tokens_of(feature_map))))
        return patch_logits_to_pixels(logits, feature_map.shape[2:], size)


class ProgressiveUpsamplingDecoder(nn.Module):
    """SETR-PUP (mmsegmentation's ``SETRUPHead``): each map LayerNorm-ed, then
    ``ceil(log2(patch))`` stages of 3x3 conv (``channels``) + BatchNorm + ReLU + 2x bilinear
    upsampling (4 stages for 16-pixel patches, as in SETR), dropout and a 1x1 classifier, and a
    last resize to the exact image size. ``layers`` > 1 (or a list of block indices) concatenates
    the maps of several blocks along the channels before the first conv: multi-level features,
    a lighter stand-in for SETR-MLA's separate per-level branches."""

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        patch_size: Sequence[int] = (16, 16),
        layers: int | Sequence[int] = 1,
        channels: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.layers = layers if isinstance(layers, int) else list(layers)
        num_maps = layers if isinstance(layers, int) else len(layers)
        self.norms = nn.ModuleList(LayerNorm(embed_dim) for _ in range(num_maps))
        stages = []
        in_channels = embed_dim * num_maps
        for _ in range(max(1, math.ceil(math.log2(max(patch_size))))):
            stages += [
                nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
            in_channels = channels
        self.up = nn.Sequential(*stages)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        normed = [
            norm(feature_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            for norm, feature_map in zip(self.norms, features, strict=True)
        ]
        return upsample(self.classifier(self.dropout(self.up(torch.cat(normed, dim=1)))), size)


class MaskTransformerDecoder(nn.Module):
    """Segmenter's mask transformer (Strudel et al., 2021, ``segm/model/decoder.py``): the
    last block's tokens, LayerNorm-ed and projected to ``dim``, are joined by one learned
    embedding per class; ``depth`` transformer blocks process them together; patch and class
    embeddings are projected, L2-normalised, and their scalar products (LayerNorm-ed over the
    classes) are the patch masks, upsampled bilinearly. Defaults: the paper's 2 blocks of the
    encoder's width, ``dim // 64`` heads, dropout 0.1."""

    layers = 1

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        patch_size: Sequence[int] = (16, 16),
        depth: int = 2,
        dim: int | None = None,
        num_heads: int | None = None,
        dropout: float = 0.1,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        dim = dim or embed_dim
        num_heads = num_heads or max(1, dim // 64)
        self.num_classes = num_classes
        self.norm = LayerNorm(embed_dim)
        self.proj_dec = nn.Linear(embed_dim, dim)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, drop=dropout, drop_path=drop_path_rate) for _ in range(depth)
        )
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        self.proj_patch = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.decoder_norm = LayerNorm(dim)
        self.mask_norm = LayerNorm(num_classes)
        self.apply(init_linear_and_norm)
        nn.init.trunc_normal_(self.cls_emb, std=0.02)

    def no_weight_decay(self) -> set[str]:
        return {"cls_emb"}

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        (feature_map,) = features
        tokens = self.proj_dec(self.norm(tokens_of(feature_map)))
        tokens = torch.cat([tokens, self.cls_emb.expand(len(tokens), -1, -1)], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.decoder_norm(tokens)
        patches = F.normalize(tokens[:, : -self.num_classes] @ self.proj_patch, dim=-1)
        classes = F.normalize(tokens[:, -self.num_classes :] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        return patch_logits_to_pixels(masks, feature_map.shape[2:], size)
