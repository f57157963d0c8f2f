"""Per-sample train/eval transforms and the batch step that finishes them (DeiT recipe).

The split keeps the loader workers' share small: per sample, on the CPU, only what differs per
image (crop, flip, augmentation policy, erasing) and on uint8, so batches leave the workers at a
quarter of float32's size. Per batch, wherever the batch lands (the GPU in training), the
conversion to float, normalisation and MixUp/CutMix (``BatchStep``).

Transforms accept PIL images (decoded files, CIFAR arrays) or uint8 CHW tensors (decoded JPEGs)
and return uint8 CHW tensors. The fast path keeps tensors from decode to batch: torchvision's
SIMD tensor kernels crop, resize and warp faster than PIL, and the two policy ops whose tensor
kernels are slow go through PIL for that op alone (``PILWhereFaster``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import default_collate
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = v2.InterpolationMode.BICUBIC
# RandAugment/TrivialAugment's rotations and shears: tensor warps have no bicubic, and PIL's
# (the slow path) costs twice its bilinear
BILINEAR = v2.InterpolationMode.BILINEAR


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 CHW tensor to PIL image through one contiguous HWC copy (``v2.ToPILImage`` copies
    the strided view byte by byte)."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


class PILWhereFaster:
    """Mixin for torchvision's auto-augment policies: on plain uint8 RGB tensors (the fast
    path's), runs the ops whose PIL kernels beat the tensor ones even with both conversions
    (Sharpness, Solarize) through PIL, and every other op on the tensor, where the warps are
    faster than PIL's (``benchmarks/data_pipeline.py`` measures the pipeline). Other inputs run
    as in torchvision. The PIL ops round like PIL: Sharpness may differ by 1, and Solarize
    compares with the threshold in float64, not float32."""

    PIL_OPS = frozenset({"Sharpness", "Solarize"})

    def _apply_image_or_video_transform(
        self, image: Any, transform_id: str, *args: Any, **kwargs: Any
    ) -> Any:
        apply = super()._apply_image_or_video_transform  # type: ignore[misc]
        if transform_id in self.PIL_OPS and is_rgb_uint8(image):
            return v2.functional.pil_to_tensor(apply(to_pil(image), transform_id, *args, **kwargs))
        return apply(image, transform_id, *args, **kwargs)


def is_rgb_uint8(image: Any) -> bool:
    """A plain (not tv_tensors) uint8 CHW tensor with 3 channels."""
    return (
        type(image) is torch.Tensor
        and image.dtype == torch.uint8
        and image.ndim == 3
        and image.shape[0] == 3
    )


class RandAugment(PILWhereFaster, v2.RandAugment):
    pass


class TrivialAugmentWide(PILWhereFaster, v2.TrivialAugmentWide):
    pass


def build_train_transform(
    img_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
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
    "trivial": TrivialAugmentWide, null: none) + optional colour jitter + RandomErasing.

    Erased boxes are filled with the ``mean`` colour, which normalises to 0 like torchvision's
    RandomErasing on normalised images.
    """
    crop = [
        v2.RandomResizedCrop(
            img_size, scale=tuple(scale), ratio=tuple(ratio), interpolation=BICUBIC
        ),
        v2.RandomHorizontalFlip(hflip),
    ]
    policies = augment_policies(auto_augment, rand_n, rand_m, color_jitter)
    # fast: plain tensors from the start (not tv_tensors.Image: v2 dispatches faster on them)
    to_tensor = [v2.PILToTensor()]
    steps = to_tensor + crop + policies if fast else crop + policies + to_tensor
    fill = [round(255 * channel) for channel in mean]
    erase = [v2.RandomErasing(erase_prob, value=fill)] if erase_prob > 0 else []
    return v2.Compose([*steps, *erase])


def augment_policies(
    auto_augment: str | None, rand_n: int, rand_m: int, color_jitter: float | None
) -> list[v2.Transform]:
    policies: dict[str | None, list[v2.Transform]] = {
        "rand": [RandAugment(num_ops=rand_n, magnitude=rand_m, interpolation=BILINEAR)],
        "trivial": [TrivialAugmentWide(interpolation=BILINEAR)],
        None: [],
    }
    if auto_augment not in policies:
        raise ValueError(f"auto_augment must be 'rand', 'trivial' or null, got {auto_augment!r}")
    jitter = [v2.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter else []
    return policies[auto_augment] + jitter


def build_eval_transform(img_size: int, crop_pct: float = 0.875, fast: bool = True) -> v2.Compose:
    """Resize the shorter side to ``img_size / crop_pct`` (256 for 224), then center-crop."""
    resize = v2.Resize(eval_resize_size(img_size, crop_pct), interpolation=BICUBIC)
    if fast:
        return v2.Compose([v2.PILToTensor(), resize, v2.CenterCrop(img_size)])
    return v2.Compose([resize, v2.CenterCrop(img_size), v2.PILToTensor()])


def eval_resize_size(img_size: int, crop_pct: float) -> int:
    return math.floor(img_size / crop_pct)


class Normalize:
    """uint8 images (one or a batch) to float32, standardised with ``mean``/``std`` (in [0, 1]).

    One conversion and two in-place passes: on a CPU batch, much faster than ``v2.ToDtype`` +
    ``v2.Normalize``, whose two fresh 19 MB buffers (32 images of 224) dominate.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std_ = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1 / (255 * std_)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale.device != images.device:
            # moved once: a blocking copy to a GPU each batch would synchronise every step
            self.scale, self.shift = self.scale.to(images.device), self.shift.to(images.device)
        return images.float().mul_(self.scale).add_(self.shift)


class BatchMix:
    """MixUp or CutMix of a normalised batch, with soft targets.

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
                "BatchMix needs mixup_alpha > 0 (with switch_prob < 1) or cutmix_alpha > 0 "
                "(with switch_prob > 0); set data.mix: null to train without mixing"
            )
        self.mix = v2.RandomChoice(methods, p=weights)
        self.num_classes = num_classes
        self.prob = prob

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.rand(()).item() < self.prob:
            # torchvision mixes each image with its neighbour in the batch, and repeated
            # augmentation on few processes puts an image's copies side by side: shuffle first
            order = torch.randperm(len(labels), device=labels.device)
            return self.mix(images[order], labels[order])
        return images, F.one_hot(labels, self.num_classes).float()


class BatchStep:
    """What a uint8 batch still needs once it is on its device: normalisation, and for training
    batches the MixUp/CutMix of ``mix`` (a ``BatchMix`` config; null: labels stay indices)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int,
        mix: Mapping[str, float] | None = None,
    ):
        self.normalize = Normalize(mean, std)
        self.mix = None if mix is None else BatchMix(num_classes, **mix)

    def __call__(
        self, batch: tuple[torch.Tensor, torch.Tensor], train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        images = self.normalize(images)
        if train and self.mix is not None:
            return self.mix(images, labels)
        return images, labels


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
