"""Train-pipeline throughput per CPU core: vitlab's ImageFolder DataModule vs torchvision's
ImageFolder + PIL and vs timm's (DeiT's) transform, on generated ~500x375 JPEGs (ImageNet's
typical size); then the cost of the augmentation policy alone, vitlab's vs timm's.

    python benchmarks/data_pipeline.py [--images 96] [--img-size 224] [--rounds 3]

One process, one thread, no loader workers, timed in this process's CPU seconds: images/s per
core, whatever else the machine runs (its caches and memory bus stay shared). The baseline is
the textbook torchvision pipeline: PIL decode, RandomResizedCrop (bicubic), flip,
torchvision's RandAugment(2, 9), normalise, RandomErasing per sample, MixUp/CutMix in the
collate. "timm create_transform + PIL" is the DeiT / MAE fine-tuning release's pipeline, the
augmentation vitlab reproduces: PIL decode, RandomResizedCrop (bicubic), flip, timm's
RandAugment 'rand-m9-mstd0.5-inc1', normalise, timm's RandomErasing (0.25, 'pixel') per sample,
MixUp/CutMix in the collate. vitlab's loader does that per-sample work on uint8 tensors
(TorchCodec decode, tensor crops, timm's policy with exact tensor kernels where they exist) and
leaves normalising, erasing and mixing to the batch step that runs after the batch reaches the
accelerator; the rows "+ batch step" run that step on this CPU too, as a CPU-only training run
would. Rounds alternate between the pipelines and the best round of each counts. Also
measured: vitlab on a `vitlab.data.pack` copy, and the policy alone on the same crops and the
same draws (vitlab on uint8 tensors and on PIL vs timm on PIL).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.pack import pack
from vitlab.data.rand_augment import from_pil
from vitlab.data.synthetic import synthetic_image, write_image_tree
from vitlab.data.transforms import (
    BICUBIC,
    DEIT_AUTO_AUGMENT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchMix,
    augment_policies,
)

Batch = tuple[torch.Tensor, torch.Tensor]
Pipeline = tuple[Dataset, Callable[[list], Batch], Callable[[Batch], Batch]]


def images_per_second(pipeline: Pipeline, batch_size: int) -> float:
    dataset, collate, batch_step = pipeline
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate
    )
    started = time.process_time()
    seen = sum(len(batch_step(batch)[0]) for batch in loader)
    return seen / (time.process_time() - started)


def torchvision_pipeline(train_dir: Path, img_size: int, mix: BatchMix) -> Pipeline:
    transform = v2.Compose(
        [
            v2.RandomResizedCrop(img_size, interpolation=BICUBIC),
            v2.RandomHorizontalFlip(),
            v2.RandAugment(num_ops=2, magnitude=9, interpolation=v2.InterpolationMode.BILINEAR),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            v2.RandomErasing(0.25),
        ]
    )
    return (
        ImageFolder(str(train_dir), transform=transform),
        lambda samples: mix(*default_collate(samples)),
        lambda batch: batch,
    )


class SkipPosterizeToZero:
    """timm's policy, returning its input where timm posterizes to 0 bits, which Pillow 13
    refuses (about 0.3% of images at 'rand-m9-mstd0.5-inc1'; vitlab returns black there)."""

    def __init__(self, policy: Callable[[Image.Image], Image.Image]):
        self.policy = policy

    def __call__(self, image: Image.Image) -> Image.Image:
        try:
            return self.policy(image)
        except ValueError as error:
            if "bits must be" not in str(error):
                raise
            return image


def timm_transform(img_size: int) -> v2.Compose:
    """DeiT's train transform as its release builds it (timm's create_transform)."""
    primary, secondary, final = create_transform(
        img_size,
        is_training=True,
        auto_augment=DEIT_AUTO_AUGMENT,
        interpolation="bicubic",
        re_prob=0.25,
        re_mode="pixel",
        re_count=1,
        separate=True,
    )
    (policy,) = secondary.transforms
    return v2.Compose([primary, SkipPosterizeToZero(policy), final])


def timm_pipeline(train_dir: Path, img_size: int, mix: BatchMix) -> Pipeline:
    return (
        ImageFolder(str(train_dir), transform=timm_transform(img_size)),
        lambda samples: mix(*default_collate(samples)),
        lambda batch: batch,
    )


def vitlab_pipelines(root: Path, img_size: int, label: str) -> dict[str, Pipeline]:
    datamodule = ImageFolderDataModule(
        root, img_size=img_size, val_fraction=0.01, mix={}, num_workers=0
    )
    datamodule.setup()
    dataset, collate = datamodule.splits["train"], default_collate
    return {
        f"vitlab{label}": (dataset, collate, lambda batch: batch),
        f"vitlab{label} + batch step": (
            dataset,
            collate,
            lambda batch: datamodule.batch_step(batch, train=True),
        ),
    }


def policy_crops(count: int, img_size: int) -> list[Image.Image]:
    """Photo-like crops at the policy's input size."""
    rng = np.random.default_rng(0)
    return [synthetic_image((img_size, img_size), k, rng) for k in range(count)]


def policy_seconds_per_image(policy: Callable, images: list) -> float:
    """CPU seconds per image of ``policy``, with the same draws for every policy timed."""
    random.seed(0)
    np.random.seed(0)
    started = time.process_time()
    for image in images:
        policy(image)
    return (time.process_time() - started) / len(images)


def time_policies(img_size: int, count: int, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` ms per image of vitlab's policy (on uint8 tensors and on PIL) and of
    timm's on PIL, all ``DEIT_AUTO_AUGMENT`` with ImageNet's mean fill and the same draws."""
    crops = policy_crops(count, img_size)
    (ours,) = augment_policies(DEIT_AUTO_AUGMENT, None, IMAGENET_MEAN)
    (timm_policy,) = timm_transform(img_size).transforms[1:2]
    runs = {
        "vitlab, uint8 tensors": (ours, [from_pil(crop) for crop in crops]),
        "vitlab, PIL": (ours, crops),
        "timm, PIL": (timm_policy, crops),
    }
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, (policy, images) in runs.items():
            best[name] = min(best[name], 1000 * policy_seconds_per_image(policy, images))
    return best


def add_loader_arguments(parser: argparse.ArgumentParser) -> None:
    """The loader benchmarks' arguments: the generated tree's size, the crop, batch and rounds."""
    parser.add_argument("--images", type=int, default=96, help="images per class (2 classes)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_loader_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        raw, packed = Path(tmp) / "raw", Path(tmp) / "packed"
        write_image_tree(raw, {"train": args.images}, num_classes=2, size=(500, 375), png_every=0)
        pack(raw, packed, workers=1)
        baseline = "torchvision ImageFolder + PIL"
        pipelines = {
            baseline: torchvision_pipeline(raw / "train", args.img_size, BatchMix(2)),
            "timm create_transform + PIL": timm_pipeline(raw / "train", args.img_size, BatchMix(2)),
            **vitlab_pipelines(raw, args.img_size, ""),
            **vitlab_pipelines(packed, args.img_size, ", packed"),
        }
        best = {name: 0.0 for name in pipelines}
        for _ in range(args.rounds):
            for name, pipeline in pipelines.items():
                best[name] = max(best[name], images_per_second(pipeline, args.batch_size))
    policy_ms = time_policies(args.img_size, 2 * args.images, args.rounds)

    print(
        f"{2 * args.images} train images of 500x375 -> {args.img_size}, 1 core, "
        f"best of {args.rounds}"
    )
    for name, rate in best.items():
        print(f"{name:36s} {rate:7.1f} images/s  {rate / best[baseline]:5.2f}x")
    print(f"RandAugment {DEIT_AUTO_AUGMENT} alone, {args.img_size}px crops, same draws:")
    for name, ms in policy_ms.items():
        print(f"policy {name:29s} {ms:7.3f} ms/image  {policy_ms['timm, PIL'] / ms:5.2f}x")


if __name__ == "__main__":
    main()
