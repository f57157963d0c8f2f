"""The base of the RGB classification DataModules: DeiT transforms, repeated augmentation, and
normalisation + random erasing + MixUp/CutMix once a uint8 batch is on its device.

Subclasses (image folders, ImageNet, CIFAR) only say where the images come from, by
implementing ``build_splits``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from vitlab.data.base import SplitsDataModule
from vitlab.data.multicrop import ibot_rgb_views
from vitlab.data.sampler import RepeatedAugSampler
from vitlab.data.transforms import (
    ERASE_KEYS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchStep,
    build_erasing,
    build_eval_transform,
    build_train_transform,
    collate_present,
    eval_resize_size,
)


class ImageDataModule(SplitsDataModule):
    """Base for RGB classification data.

    Loaders yield uint8 images; ``on_after_batch_transfer`` normalises them on the device they
    were moved to, and erases and mixes training batches (``BatchStep``).

    ``train_transform`` configures the train augmentation: its ``erase_prob`` / ``erase_mode``
    the batch step's random erasing (see ``build_erasing``), the rest the per-sample transform
    (see ``build_train_transform``). ``mix`` configures the batch-level MixUp/CutMix (see
    ``BatchMix``; null disables it), ``repeated_aug`` > 1 the repeated-augmentation sampler,
    ``eval_crop_pct`` the evaluation resize + center crop (null: the MAE release's rule, see
    ``eval_crop_ratio``). ``augment`` false trains on the evaluation preprocessing, unerased and
    unmixed. ``multi_crop`` trains on iBOT's views instead (``ibot_rgb_views``; set erasing and
    mixing off with it: ``data/augment=ibot``).
    """

    def __init__(
        self,
        *,
        train_transform: Mapping[str, Any] | None = None,
        eval_crop_pct: float | None = 0.875,
        mix: Mapping[str, float] | None = None,
        repeated_aug: int = 1,
        fast_path: bool = True,
        seed: int = 0,
        in_chans: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 128,
        **shared: Any,
    ):
        if in_chans != 3:
            raise ValueError(
                f"{type(self).__name__} yields RGB images: in_chans must be 3, got {in_chans}"
            )
        super().__init__(in_chans=in_chans, mean=mean, std=std, batch_size=batch_size, **shared)
        self.train_transform_cfg = dict(train_transform or {})
        self.erase_cfg = {
            key: self.train_transform_cfg.pop(key)
            for key in ERASE_KEYS
            if key in self.train_transform_cfg
        }
        self.eval_crop_pct = eval_crop_pct
        self.mix = dict(mix) if mix is not None and self.augment else None
        self.repeated_aug = repeated_aug
        self.fast_path = fast_path
        self.seed = seed

    def build_rgb_splits(
        self, train_transform: Callable, eval_transform: Callable
    ) -> dict[str, Dataset]:
        """The train, val and test datasets, with these transforms applied per sample."""
        raise NotImplementedError

    def build_splits(self) -> dict[str, Dataset]:
        return self.build_rgb_splits(self.train_transform(), self.eval_transform())

    def make_batch_step(self) -> BatchStep:
        erase = build_erasing(**self.erase_cfg) if self.augment else None
        return BatchStep(self.image.mean, self.image.std, self.num_classes, self.mix, erase)

    def train_transform(self) -> Callable:
        if self.multi_crop is not None:
            return ibot_rgb_views(self.image.size, self.multi_crop)
        if not self.augment:
            return self.eval_transform()
        return build_train_transform(
            self.image.size, self.image.mean, fast=self.fast_path, **self.train_transform_cfg
        )

    def eval_transform(self) -> v2.Compose:
        return build_eval_transform(self.image.size, self.eval_crop_pct, self.fast_path)

    def read_image(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB")

    def preprocessing(self) -> list[dict[str, Any]]:
        """``build_eval_transform``: PIL or tensor geometry, as ``fast_path`` chooses."""
        size = eval_resize_size(self.image.size, self.eval_crop_pct)
        geometry = [
            {"op": "resize", "size": size, "interpolation": "bicubic"},
            {"op": "center_crop", "size": [self.image.size, self.image.size]},
        ]
        to_tensor = [{"op": "to_tensor"}]
        steps = to_tensor + geometry if self.fast_path else geometry + to_tensor
        return [
            {"op": "convert", "mode": "RGB"},
            *steps,
            {"op": "scale"},
            self.image.normalize_step(),
        ]

    def train_sampler(self, shuffle_seed: int | None) -> Sampler | None:
        """Repeated augmentation when asked; else the base's seeded (or plain) shuffle."""
        if self.repeated_aug > 1:
            return RepeatedAugSampler(
                self.splits["train"], repeats=self.repeated_aug, seed=self.seed
            )
        return super().train_sampler(shuffle_seed)

    def collate(self, samples: list[Any]) -> Any:
        return collate_present(samples)
