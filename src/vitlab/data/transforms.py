"""Per-sample train/eval transforms and the batch step that finishes them (DeiT recipe).

The split keeps the loader workers' share small: per sample, on the CPU, only what differs per
image (crop, flip, augmentation policy) and on uint8, so batches leave the workers at a quarter
of float32's size. Per batch, wherever the batch lands (the GPU in training), the conversion to
float, normalisation, random erasing and MixUp/CutMix (``BatchStep``; every DataModule
normalises there, ``vitlab.data.base``).

Transforms accept PIL images (decoded files, CIFAR arrays) or uint8 CHW tensors (decoded JPEGs)
and return uint8 CHW tensors. The fast path keeps tensors from decode to batch: torchvision's
SIMD tensor kernels crop and resize faster than PIL. The augmentation policy is timm's
RandAugment with timm's draws and pixels (``vitlab.data.rand_augment``), and random erasing is
timm's, on the normalised batch (``RandomErasing``): the DeiT and MAE fine-tuning recipes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate
from torchvision.transforms import v2

from vitlab.data.rand_augment import RandAugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC = v2.InterpolationMode.BICUBIC
# DeiT's and MAE fine-tuning's policy (timm's config string)
DEIT_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
# the MAE release's evaluation: crop ratio 224/256 up to this size, the whole image above
MAE_FULL_CROP_ABOVE = 224


def build_train_transform(
    img_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    *,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    auto_augment: str | None = DEIT_AUTO_AUGMENT,
    color_jitter: float | None = None,
    fast: bool = True,
) -> v2.Compose:
    """RandomResizedCrop (bicubic) + flip + ``auto_augment`` + optional colour jitter.

    ``auto_augment`` is a timm RandAugment config string (``rand-m9-mstd0.5-inc1``: DeiT's; see
    ``vitlab.data.rand_augment``) or null; its warps fill with ``mean`` in 0-255 ints, as timm
    fills them. Random erasing runs on the normalised batch (``RandomErasing``).
    """
    crop = [
        v2.RandomResizedCrop(
            img_size, scale=tuple(scale), ratio=tuple(ratio), interpolation=BICUBIC
        ),
        v2.RandomHorizontalFlip(hflip),
    ]
    policies = augment_policies(auto_augment, color_jitter, mean)
    # fast: plain tensors from the start (not tv_tensors.Image: v2 dispatches faster on them)
    to_tensor = [v2.PILToTensor()]
    return v2.Compose(to_tensor + crop + policies if fast else crop + policies + to_tensor)


def augment_policies(
    auto_augment: str | None, color_jitter: float | None, mean: Sequence[float]
) -> list[Callable]:
    # timm's img_mean: the fill of the policy's rotations, shears and translations
    fill = tuple(min(255, round(255 * channel)) for channel in mean)
    policy = [RandAugment(auto_augment, fill)] if auto_augment is not None else []
    jitter = [v2.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter else []
    return policy + jitter


def build_eval_transform(
    img_size: int, crop_pct: float | None = 0.875, fast: bool = True
) -> v2.Compose:
    """Resize the shorter side to ``img_size / crop_pct`` (256 for 224 at 0.875), then
    center-crop; ``crop_pct`` None: the MAE release's rule (``eval_crop_ratio``)."""
    resize = v2.Resize(eval_resize_size(img_size, crop_pct), interpolation=BICUBIC)
    if fast:
        return v2.Compose([v2.PILToTensor(), resize, v2.CenterCrop(img_size)])
    return v2.Compose([resize, v2.CenterCrop(img_size), v2.PILToTensor()])


def eval_crop_ratio(img_size: int, crop_pct: float | None) -> float:
    """``crop_pct``, or for None the MAE release's rule: 224/256 up to 224 px and 1.0 (the whole
    resized image) above, where its 384/448 px fine-tuning evaluates. DeiT (and timm's default)
    use 0.875 at every size."""
    if crop_pct is not None:
        return crop_pct
    return 224 / 256 if img_size <= MAE_FULL_CROP_ABOVE else 1.0


def eval_resize_size(img_size: int, crop_pct: float | None) -> int:
    return math.floor(img_size / eval_crop_ratio(img_size, crop_pct))


class Normalize:
    """Images (one or a batch; uint8 in 0-255 or float in [0, 1]) to float32, standardised
    with ``mean``/``std`` (in [0, 1] units).

    The arithmetic of ``v2.ToDtype(torch.float32, scale=True)`` + ``v2.Normalize`` (bit for
    bit), with one fresh buffer instead of two: the conversion's, then passes in place.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.mean.device != images.device:
            # moved once: a blocking copy to a GPU each batch would synchronise every step
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        scaled = v2.functional.to_dtype(images, torch.float32, scale=True)
        if scaled is images:
            scaled = images.clone()
        return scaled.sub_(self.mean).div_(self.std)


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


class RandomErasing:
    """timm's ``RandomErasing(prob, mode=mode, max_count=1)`` on each image of a normalised
    batch, on the batch's device (DeiT and MAE fine-tuning: 0.25, 'pixel').

    With probability ``prob`` an image gets one box: area uniform in [2%, 1/3] of the image,
    aspect ratio log-uniform in [0.3, 1/0.3], the first of 10 tries that fits inside. The box is
    filled with N(0, 1) noise per pixel and channel ('pixel'), with one N(0, 1) colour per
    channel ('rand') or with 0, the mean colour ('const'). It draws as timm does, image by
    image: the box from python's ``random``, the noise from torch's generator on the device.
    """

    MODES = ("pixel", "rand", "const")
    ATTEMPTS = 10

    def __init__(
        self,
        prob: float = 0.25,
        mode: str = "pixel",
        area: tuple[float, float] = (0.02, 1 / 3),
        min_aspect: float = 0.3,
    ):
        if mode not in self.MODES:
            raise ValueError(f"erase_mode must be one of {self.MODES}, got {mode!r}")
        self.prob, self.mode, self.area = prob, mode, area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Erases boxes of the (B, C, H, W) float ``images`` in place and returns them."""
        for image in images:
            if random.random() <= self.prob:
                self.erase(image)
        return images

    def erase(self, image: torch.Tensor) -> None:
        channels, height, width = image.shape
        for _ in range(self.ATTEMPTS):
            target_area = random.uniform(*self.area) * (height * width)
            aspect = math.exp(random.uniform(*self.log_aspect))
            box_h = round(math.sqrt(target_area * aspect))
            box_w = round(math.sqrt(target_area / aspect))
            if box_w < width and box_h < height:
                top = random.randint(0, height - box_h)
                left = random.randint(0, width - box_w)
                box = image[:, top : top + box_h, left : left + box_w]
                box.copy_(self.fill((channels, box_h, box_w), image))
                return

    def fill(self, shape: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixel":
            return torch.empty(shape, dtype=like.dtype, device=like.device).normal_()
        colour = torch.empty((shape[0], 1, 1), dtype=like.dtype, device=like.device)
        return colour.normal_() if self.mode == "rand" else colour.zero_()


class BatchResizedCrop:
    """``RandomResizedCrop(size, scale, ratio)`` + a horizontal flip (probability ``hflip``) of
    every image of a float batch at once, on the batch's device: one bilinear ``grid_sample``
    for the whole batch instead of a transform per image.

    Per image, as torchvision draws a crop: an area fraction uniform in ``scale`` and an aspect
    ratio log-uniform in ``ratio``, the box placed uniformly inside the image; a box wider or
    taller than the image is clipped to it (torchvision redraws it, up to 10 times). The draws
    come from torch's generator on the device (seeded per epoch like every other draw).
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
    ):
        self.size, self.scale, self.hflip = size, tuple(scale), hflip
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = len(images)

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.empty(batch, 1, device=images.device).uniform_(low, high)

        area, ratio = uniform(*self.scale), uniform(*self.log_ratio).exp()
        # half-sides in grid_sample's [-1, 1] coordinates: a box spans its centre -/+ these
        width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        centre_x, centre_y = uniform(-1, 1) * (1 - width), uniform(-1, 1) * (1 - height)
        width = torch.where(uniform(0, 1) < self.hflip, -width, width)
        # the output pixels' centres in [-1, 1] (align_corners=False), mapped into each box
        steps = torch.arange(self.size, device=images.device) * (2 / self.size) + (
            1 / self.size - 1
        )
        x = (steps * width + centre_x)[:, None, :].expand(-1, self.size, -1)
        y = (steps * height + centre_y)[:, :, None].expand(-1, -1, self.size)
        grid = torch.stack([x, y], dim=-1)
        return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


# the train_transform keys that configure the batch step's random erasing
ERASE_KEYS = ("erase_prob", "erase_mode")


def build_erasing(erase_prob: float = 0.25, erase_mode: str = "pixel") -> RandomErasing | None:
    """The batch step's random erasing for ``train_transform.erase_prob`` / ``erase_mode``
    (timm's ``re_prob`` / ``re_mode``; the defaults are DeiT's); None when ``erase_prob`` is 0."""
    return RandomErasing(erase_prob, erase_mode) if erase_prob > 0 else None


class BatchStep:
    """What a batch still needs once it is on its device, for every DataModule: normalisation,
    and for training batches a batched crop and flip (``crop``, a ``BatchResizedCrop``; None:
    none), random erasing (``erase``; None: none) and then the MixUp/CutMix of ``mix`` (a
    ``BatchMix`` config for ``num_classes``; null: labels stay indices), in timm's order. A list of multi-crop views is normalised view by view, nothing else; targets
    of any kind (indices, masks, box lists) pass through unless mixed."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int | None = None,
        mix: Mapping[str, float] | None = None,
        erase: RandomErasing | None = None,
        crop: BatchResizedCrop | None = None,
    ):
        self.normalize = Normalize(mean, std)
        self.mix = None if mix is None else BatchMix(num_classes, **mix)
        self.erase = erase
        self.crop = crop

    def __call__(self, batch: tuple[Any, Any], train: bool) -> tuple[Any, Any]:
        images, labels = batch
        if isinstance(images, list):
            # multi-crop views (vitlab.data.multicrop): normalised only
            return [self.normalize(view) for view in images], labels
        images = self.normalize(images)
        if train and self.crop is not None:
            # bilinear resampling commutes with the per-channel affine normalisation
            images = self.crop(images)
        if train and self.erase is not None:
            images = self.erase(images)
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
