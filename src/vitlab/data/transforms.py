"""Per-sample train/eval transforms and the batch-level MixUp/CutMix collate (DeiT recipe).

Transforms accept PIL images (decoded files, CIFAR arrays) and return normalised float tensors.
The fast path crops and resizes on uint8 tensors, whose SIMD kernels are several times faster than
PIL's, then hands the small crop back to PIL for the policies that are faster there (RandAugment,
TrivialAugment, colour jitter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = v2.InterpolationMode.BICUBIC
# RandAugment/TrivialAugment's rotations and shears: PIL's bicubic warp costs twice as much and
# tensors have none
BILINEAR = v2.InterpolationMode.BILINEAR


def build_train_transform(
    img_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    auto_augment: str | None = "rand",
    rand_n: int = 2,
    rand_m: int = 9,
    color_jitter: float | None = None,
    erase_prob: float = 0.25,
    fast: bool = True,
) -> v2.Compose:
    """RandomResizedCrop (bicubic) + flip + ``auto_augment`` ("rand": RandAugment(n, m),
    "trivial": TrivialAugmentWide, null: none) + optional colour jitter + normalise + RandomErasing.
    """
    crop = [
        v2.RandomResizedCrop(
            img_size, scale=tuple(scale), ratio=tuple(ratio), interpolation=BICUBIC
        ),
        v2.RandomHorizontalFlip(hflip),
    ]
    policies = augment_policies(auto_augment, rand_n, rand_m, color_jitter)
    if fast:
        crop = [v2.PILToTensor(), *crop] + ([v2.ToPILImage()] if policies else [])
    erase = [v2.RandomErasing(erase_prob)] if erase_prob > 0 else []
    return v2.Compose([*crop, *policies, *to_normalized_tensor(mean, std), *erase])


def augment_policies(
    auto_augment: str | None, rand_n: int, rand_m: int, color_jitter: float | None
) -> list[v2.Transform]:
    policies: dict[str | None, list[v2.Transform]] = {
        "rand": [v2.RandAugment(num_ops=rand_n, magnitude=rand_m, interpolation=BILINEAR)],
        "trivial": [v2.TrivialAugmentWide(interpolation=BILINEAR)],
        None: [],
    }
    if auto_augment not in policies:
        raise ValueError(f"auto_augment must be 'rand', 'trivial' or null, got {auto_augment!r}")
    jitter = [v2.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter else []
    return policies[auto_augment] + jitter


def build_eval_transform(
    img_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 0.875,
    fast: bool = True,
) -> v2.Compose:
    """Resize the shorter side to ``img_size / crop_pct`` (256 for 224), then center-crop."""
    resize = [v2.Resize(eval_resize_size(img_size, crop_pct), interpolation=BICUBIC)]
    if fast:
        resize = [v2.PILToTensor(), *resize]
    return v2.Compose([*resize, v2.CenterCrop(img_size), *to_normalized_tensor(mean, std)])


def eval_resize_size(img_size: int, crop_pct: float) -> int:
    return math.floor(img_size / crop_pct)


def to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


class MixCollate:
    """Collate that drops skipped (``None``) samples and mixes the batch with MixUp or CutMix.

    With probability ``prob`` a batch is mixed, by CutMix with probability ``switch_prob`` and by
    MixUp otherwise; unmixed batches get one-hot targets, so the task always sees soft targets.
    ``mixup_alpha`` or ``cutmix_alpha`` 0 disables that method.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ):
        methods, weights = [], []
        if mixup_alpha > 0 and switch_prob < 1:
            methods.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
            weights.append(1 - switch_prob)
        if cutmix_alpha > 0 and switch_prob > 0:
            methods.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
            weights.append(switch_prob)
        if not methods:
            raise ValueError(
                "MixCollate needs mixup_alpha > 0 (with switch_prob < 1) or cutmix_alpha > 0 "
                "(with switch_prob > 0); set data.mix: null to train without mixing"
            )
        self.mix = v2.RandomChoice(methods, p=weights)
        self.num_classes = num_classes
        self.prob = prob

    def __call__(self, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = collate_present(samples)
        if torch.rand(()).item() < self.prob:
            return self.mix(images, labels)
        return images, F.one_hot(labels, self.num_classes).float()


def collate_present(samples: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``default_collate`` of the samples that loaded (unreadable files come back as ``None``)."""
    return default_collate([sample for sample in samples if sample is not None])


def min_decode_side(transform: v2.Compose) -> int:
    """The shorter side an image needs so that ``transform`` never upsamples what it crops.

    For a RandomResizedCrop that is ``size / sqrt(min_scale)`` (the smallest crop still has
    ``size`` pixels a side), for an eval Resize the resize target. JPEG decoding can stop at the
    smallest DCT scale that keeps this many pixels (``PIL.Image.draft``).
    """
    for step in transform.transforms:
        if isinstance(step, v2.RandomResizedCrop):
            return math.ceil(max(step.size) / math.sqrt(step.scale[0]))
        if isinstance(step, v2.Resize):
            return max(step.size)
    raise ValueError("transform has no RandomResizedCrop or Resize to size the decode for")
