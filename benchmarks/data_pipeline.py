"""Train-pipeline throughput per CPU core: vitlab's ImageFolder DataModule vs torchvision's
ImageFolder + PIL with the same augmentation, on generated ~500x375 JPEGs (ImageNet's typical size).

    python benchmarks/data_pipeline.py [--images 96] [--img-size 224] [--rounds 3]

One process, one thread, no loader workers, timed in this process's CPU seconds: images/s per
core, whatever else the machine runs (its caches and memory bus stay shared). The baseline is
the textbook torchvision pipeline: PIL decode, RandomResizedCrop (bicubic), flip,
RandAugment(2, 9), normalise, RandomErasing per sample, MixUp/CutMix in the collate. vitlab's
loader does the same per-sample work on uint8 tensors (TorchCodec decode, tensor kernels) and
leaves normalising and mixing to the batch step that runs after the batch reaches the
accelerator; the rows "+ batch step" run that step on this CPU too, as a CPU-only training run
would. Rounds alternate between the pipelines and the best round of each counts. Also
measured: vitlab on a `vitlab.data.pack` copy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.pack import pack
from vitlab.data.synthetic import write_image_tree
from vitlab.data.transforms import BICUBIC, IMAGENET_MEAN, IMAGENET_STD, BatchMix

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96, help="images per class (2 classes)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        raw, packed = Path(tmp) / "raw", Path(tmp) / "packed"
        write_image_tree(raw, {"train": args.images}, num_classes=2, size=(500, 375), png_every=0)
        pack(raw, packed, workers=1)
        baseline = "torchvision ImageFolder + PIL"
        pipelines = {
            baseline: torchvision_pipeline(raw / "train", args.img_size, BatchMix(2)),
            **vitlab_pipelines(raw, args.img_size, ""),
            **vitlab_pipelines(packed, args.img_size, ", packed"),
        }
        best = {name: 0.0 for name in pipelines}
        for _ in range(args.rounds):
            for name, pipeline in pipelines.items():
                best[name] = max(best[name], images_per_second(pipeline, args.batch_size))

    print(
        f"{2 * args.images} train images of 500x375 -> {args.img_size}, 1 core, "
        f"best of {args.rounds}"
    )
    for name, rate in best.items():
        print(f"{name:36s} {rate:7.1f} images/s  {rate / best[baseline]:5.2f}x")


if __name__ == "__main__":
    main()
