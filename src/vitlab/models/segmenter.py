"""Dense prediction with a ViT: classify every patch token, upsample the logits to the pixels.

The linear decoder of Segmenter (Strudel et al., 2021): the encoder's patch tokens are
normalised and mapped to class logits one patch at a time, laid out on the patch grid and
upsampled bilinearly to the input size. Attention gives each patch its context; the decoder
itself stays per-patch and cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.models.vit import LayerNorm, VisionTransformer, init_linear_and_norm


class PatchDecoder(nn.Module):
    """Per-patch classifier: (B, N, D) -> (B, N, num_classes).

    LayerNorm, then a GELU hidden layer of ``hidden_dim`` units when ``hidden_dim > 0``, then a
    linear layer to the classes. The norm is needed when the backbone pools by averaging: its
    final ``norm`` is then the identity and the patch tokens come out unnormalised.
    """

    def __init__(self, embed_dim: int, num_classes: int, hidden_dim: int = 0):
        super().__init__()
        self.norm = LayerNorm(embed_dim)
        self.hidden = (
            nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU())
            if hidden_dim > 0
            else nn.Identity()
        )
        self.head = nn.Linear(hidden_dim if hidden_dim > 0 else embed_dim, num_classes)
        self.apply(init_linear_and_norm)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.norm(tokens)))


class ViTSegmenter(nn.Module):
    """Semantic segmentation: images (B, C, H, W) -> per-pixel logits (B, num_classes, H, W).

    ``backbone`` is any ``VisionTransformer``; its classifier (``head``, ``fc_norm``) is replaced
    by the identity (``num_classes`` becomes 0), so a classifier config such as ``${model}`` can
    be passed as it is. The backbone keeps its timm names under ``backbone.``: pretrained vitlab,
    MAE or timm ViT weights load with
    ``vitlab.models.checkpoint.load_pretrained(segmenter.backbone, path)`` (which also resamples
    the position embeddings to the backbone's patch grid), or with
    ``segmenter.backbone.load_state_dict(state, strict=False)`` for an in-memory state dict.
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int, decoder_hidden_dim: int = 0):
        super().__init__()
        backbone.head = nn.Identity()
        backbone.fc_norm = nn.Identity()
        backbone.num_classes = 0
        self.backbone = backbone
        self.num_classes = num_classes
        self.decoder = PatchDecoder(backbone.embed_dim, num_classes, decoder_hidden_dim)

    def no_weight_decay(self) -> set[str]:
        """The backbone's token parameters, under their names in this module."""
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def patch_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of every patch on the patch grid: (B, num_classes, grid_h, grid_w)."""
        tokens = self.backbone.forward_features(images)[:, self.backbone.num_prefix_tokens :]
        grid_h, grid_w = self.backbone.patch_embed.grid_size
        logits = self.decoder(tokens)
        return logits.transpose(1, 2).reshape(len(images), self.num_classes, grid_h, grid_w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            self.patch_logits(images), size=images.shape[-2:], mode="bilinear", align_corners=False
        )
