"""Dense prediction with a ViT: a decoder turns the encoder's patch-token maps into per-pixel
logits at the input size.

``ViTSegmenter`` runs the backbone up to the blocks its decoder reads
(``VisionTransformer.forward_intermediates``) and hands the decoder those maps and the image
size. The decoders (``vitlab.models.seg_decoders``): Segmenter's linear decoder and mask
transformer (Strudel et al., 2021) and SETR's progressive upsampling (Zheng et al., 2021).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from vitlab.models.seg_decoders import LinearDecoder
from vitlab.models.vit import VisionTransformer


class Decoder(Protocol):
    """Patch-token maps (B, D, grid_h, grid_w), one per block in ``layers`` (the indices
    ``forward_intermediates`` takes), and the image size -> logits (B, num_classes, H, W)."""

    layers: int | Sequence[int]

    def __call__(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor: ...


# a decoder class or a partial of one (the config's ``_partial_: true``), given the backbone's
# width, the number of classes and the patch size
DecoderFactory = Callable[..., Decoder]


class ViTSegmenter(nn.Module):
    """Semantic segmentation: images (B, C, H, W) -> per-pixel logits (B, num_classes, H, W).

    ``backbone`` is any ``VisionTransformer``; its classifier (``head``, ``fc_norm``) is replaced
    by the identity (``num_classes`` becomes 0), so a classifier config such as ``${model}`` can
    be passed as it is. Its final ``norm`` applies to every map the decoder reads (the identity
    for average-pooled backbones, so each decoder normalises its input too). The backbone keeps
    its timm names under ``backbone.``: pretrained vitlab, MAE or timm ViT weights load with
    ``vitlab.models.checkpoint.load_pretrained(segmenter.backbone, path)`` (which also resamples
    the position embeddings to the backbone's patch grid).
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        decoder: DecoderFactory = LinearDecoder,
    ):
        super().__init__()
        backbone.head = nn.Identity()
        backbone.fc_norm = nn.Identity()
        backbone.num_classes = 0
        self.backbone = backbone
        self.num_classes = num_classes
        self.decoder = decoder(
            embed_dim=backbone.embed_dim,
            num_classes=num_classes,
            patch_size=backbone.patch_embed.patch_size,
        )

    def no_weight_decay(self) -> set[str]:
        """The backbone's and the decoder's token parameters, under their names here."""
        names = {f"backbone.{name}" for name in self.backbone.no_weight_decay()}
        decoder_tokens = getattr(self.decoder, "no_weight_decay", lambda: set())()
        return names | {f"decoder.{name}" for name in decoder_tokens}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_intermediates(images, self.decoder.layers, norm=True)
        return self.decoder(features, tuple(images.shape[-2:]))
