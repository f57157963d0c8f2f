"""Multi-crop views of one training image (Caron et al., 2020; DINO's and iBOT's
``DataAugmentation``): global crops at the model's size, then small local crops.

A DataModule with ``multi_crop`` set yields ``(views, targets)`` training batches, ``views``
a list of ``global_crops + local_crops`` image batches, globals first; its val and test batches
stay plain ``(images, targets)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

BICUBIC = v2.InterpolationMode.BICUBIC


@dataclass(frozen=True)
class MultiCropConfig:
    """How many crops of which relative area: ``global_scale`` and ``local_scale`` are
    RandomResizedCrop's area ranges, ``local_size`` the local crops' side in pixels.
    The defaults are main_ibot.py's (which the recipes override with the released commands')."""

    global_crops: int = 2
    global_scale: tuple[float, float] = (0.14, 1.0)
    local_crops: int = 0
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_size: int = 96

    def __post_init__(self) -> None:
        if self.global_crops < 2:
            raise ValueError(
                f"multi_crop.global_crops: the class-token loss pairs different global views, "
                f"so at least 2 are needed, got {self.global_crops}"
            )
        if self.local_crops < 0:
            raise ValueError(f"multi_crop.local_crops must be >= 0, got {self.local_crops}")
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"multi_crop.{name} must satisfy 0 < low <= high <= 1")
            object.__setattr__(self, name, (float(low), float(high)))


def multi_crop_config(config: dict[str, Any] | MultiCropConfig | None) -> MultiCropConfig | None:
    if config is None or isinstance(config, MultiCropConfig):
        return config
    return MultiCropConfig(**config)


class MultiCrop:
    """``[global_0(image), global_1(image), ..., local(image) x local_crops]``: the first
    global transform for the first view, the second for the others (iBOT's ``global_transfo1``
    and ``global_transfo2``), then the local one."""

    def __init__(
        self,
        first_global: Callable,
        other_global: Callable,
        local: Callable,
        config: MultiCropConfig,
    ):
        self.first_global, self.other_global, self.local = first_global, other_global, local
        self.config = config

    def __call__(self, image: Any) -> list[torch.Tensor]:
        views = [self.first_global(image)]
        views += [self.other_global(image) for _ in range(self.config.global_crops - 1)]
        views += [self.local(image) for _ in range(self.config.local_crops)]
        return views


def ibot_rgb_views(img_size: int, config: MultiCropConfig, blur_kernel: int = 23) -> MultiCrop:
    """iBOT's RGB augmentation (main_ibot.py ``DataAugmentationiBOT``) on uint8 tensors, in
    torchvision v2: bicubic RandomResizedCrop, flip, colour jitter (0.4, 0.4, 0.2, 0.1) with
    probability 0.8, grayscale 0.2; Gaussian blur (sigma 0.1-2) always on the first global
    view, with probability 0.1 (+ solarization 0.2) on the others, 0.5 on the local views.

    The release blurs with PIL (``ImageFilter.GaussianBlur``, radius = sigma); here a
    ``blur_kernel``-wide kernel (BYOL's 23 at 224 px) on tensors. Normalisation follows per
    batch, on its device."""

    def flip_and_jitter() -> list[Callable]:
        jitter = v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
        return [
            v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([jitter], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]

    def blur(prob: float) -> v2.Transform:
        return v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=prob)

    def crop(size: int, scale: tuple[float, float]) -> list[Callable]:
        return [v2.PILToTensor(), v2.RandomResizedCrop(size, scale=scale, interpolation=BICUBIC)]

    local_kernel = max(3, blur_kernel * config.local_size // img_size // 2 * 2 + 1)
    return MultiCrop(
        v2.Compose([*crop(img_size, config.global_scale), *flip_and_jitter(), blur(1.0)]),
        v2.Compose(
            [
                *crop(img_size, config.global_scale),
                *flip_and_jitter(),
                blur(0.1),
                v2.RandomSolarize(threshold=128, p=0.2),
            ]
        ),
        v2.Compose(
            [
                *crop(config.local_size, config.local_scale),
                *flip_and_jitter(),
                v2.RandomApply([v2.GaussianBlur(local_kernel, sigma=(0.1, 2.0))], p=0.5),
            ]
        ),
        config,
    )


def crop_views(img_size: int, config: MultiCropConfig) -> MultiCrop:
    """Crops only (bilinear, antialiased): for images where colour augmentation means nothing
    (the one-channel digits). Normalisation follows per batch, on its device."""

    def view(size: int, scale: tuple[float, float]) -> v2.RandomResizedCrop:
        return v2.RandomResizedCrop(size, scale=scale, antialias=True)

    globals_ = view(img_size, config.global_scale)
    return MultiCrop(globals_, globals_, view(config.local_size, config.local_scale), config)
