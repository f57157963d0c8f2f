"""Object detection with a plain ViT (ViTDet, Li et al., 2022): a simple feature pyramid built
from the last feature map alone, feeding torchvision's FCOS (its head, box coding, losses and
NMS; nothing of them is re-implemented here).

``SimpleFeaturePyramid`` turns the ViT's last patch-token map (stride = patch size) into maps of
strides 4, 8, 16 and 32 pixels: transposed convs (2x each) to go finer, max pooling to go
coarser, then a 1x1 and a 3x3 conv with LayerNorm each, as ViTDet's ``SimpleFeaturePyramid``.
For 16-pixel patches that is ViTDet's scales 4, 2, 1, 1/2.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead

from vitlab.models.vit import VisionTransformer


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (detectron2's ``LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def rescale(dim: int, scale: float) -> tuple[nn.Module, int]:
    """ViTDet's resampling of a map of ``dim`` channels by ``scale`` (a power of 2): transposed
    convs halving the channels (LayerNorm + GELU between them) up, max pooling down; the
    module and its output channels."""
    steps = round(math.log2(scale))
    if 2.0**steps != scale:
        raise ValueError(f"pyramid scales must be powers of 2, got {scale}")
    if steps <= 0:
        return nn.Sequential(*(nn.MaxPool2d(2) for _ in range(-steps))), dim
    layers: list[nn.Module] = []
    for step in range(steps):
        if step:
            layers += [LayerNorm2d(dim, eps=1e-6), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
        dim //= 2
    return nn.Sequential(*layers), dim


class SimpleFeaturePyramid(nn.Module):
    """A ViT and ViTDet's simple feature pyramid: images -> ``{str(stride): (B, C, H/s, W/s)}``
    for each of ``strides``, ``out_channels`` channels each (torchvision's backbone contract:
    an ``out_channels`` attribute and an ordered dict of maps). The ViT's classifier is dropped,
    its timm names stay under ``vit.``."""

    def __init__(
        self,
        vit: VisionTransformer,
        out_channels: int = 256,
        strides: Sequence[int] = (4, 8, 16, 32),
    ):
        super().__init__()
        vit.head, vit.fc_norm, vit.num_classes = nn.Identity(), nn.Identity(), 0
        self.vit = vit
        self.out_channels = out_channels
        self.strides = list(strides)
        patch = vit.patch_embed.patch_size[0]
        if vit.patch_embed.patch_size != (patch, patch):
            raise ValueError(f"the pyramid needs square patches, got {vit.patch_embed.patch_size}")
        self.stages = nn.ModuleList()
        for stride in self.strides:
            resample, dim = rescale(vit.embed_dim, patch / stride)
            self.stages.append(
                nn.Sequential(
                    resample,
                    nn.Conv2d(dim, out_channels, 1, bias=False),
                    LayerNorm2d(out_channels, eps=1e-6),
                    nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                    LayerNorm2d(out_channels, eps=1e-6),
                )
            )

    def no_weight_decay(self) -> set[str]:
        return {f"vit.{name}" for name in self.vit.no_weight_decay()}

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        (last,) = self.vit.forward_intermediates(images, 1, norm=True)
        return OrderedDict(
            (str(stride), stage(last))
            for stride, stage in zip(self.strides, self.stages, strict=True)
        )


class ViTDetFCOS(FCOS):
    """torchvision's FCOS over a ``SimpleFeaturePyramid`` of ``backbone``.

    Labels run from 1 to ``num_classes - 1`` (0 is background, as in torchvision's detection
    models). Images arrive standardised at the ViT's input size, so FCOS's own transform neither
    resizes (``min_size = max_size`` = that size) nor normalises again (mean 0, std 1). Each
    level's anchor is one box of its stride, which is how FCOS sizes its center sampling and
    its per-level regression ranges (4 to 8 strides; the first level from 0, the last to any).
    ``head_convs``: the 3x3 conv + GroupNorm(32) + ReLU layers of each head branch (FCOS: 4).
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        out_channels: int = 256,
        strides: Sequence[int] = (4, 8, 16, 32),
        head_convs: int = 4,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
    ):
        pyramid = SimpleFeaturePyramid(backbone, out_channels, strides)
        in_chans = backbone.patch_embed.proj.in_channels
        size = max(backbone.patch_embed.img_size)
        super().__init__(
            pyramid,
            num_classes,
            min_size=min(backbone.patch_embed.img_size),
            max_size=size,
            image_mean=[0.0] * in_chans,
            image_std=[1.0] * in_chans,
            anchor_generator=AnchorGenerator(
                tuple((stride,) for stride in strides), ((1.0,),) * len(strides)
            ),
            head=FCOSHead(out_channels, 1, num_classes, num_convs=head_convs),
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            topk_candidates=topk_candidates,
        )
        self.num_classes = num_classes
        # the pyramid's input is the ViT's: no padding beyond its own size
        self.transform.size_divisible = 1

    @property
    def vit(self) -> VisionTransformer:
        return self.backbone.vit

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}
