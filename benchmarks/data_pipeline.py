"""Train-pipeline throughput per CPU core: vitlab's ImageFolder DataModule vs torchvision's
ImageFolder + PIL with the same transforms, on generated ~500x375 JPEGs (ImageNet's typical size).

    python benchmarks/data_pipeline.py [--images 96] [--img-size 224] [--rounds 3]

One process, one thread, no loader workers: images/s per core. Rounds alternate between the
pipelines and the best round of each counts. Also measured: ours on a `vitlab.data.pack` copy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.pack import pack
from vitlab.data.synthetic import write_image_tree
from vitlab.data.transforms import build_train_transform


def images_per_second(dataset: Dataset, collate: Callable | None, batch_size: int) -> float:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate
    )
    started = time.perf_counter()
    seen = sum(len(images) for images, _ in loader)
    return seen / (time.perf_counter() - started)


def ours(root: Path, img_size: int, batch_size: int) -> tuple[Dataset, Callable]:
    datamodule = ImageFolderDataModule(
        root, img_size=img_size, batch_size=batch_size, num_workers=0
    )
    datamodule.setup()
    return datamodule.splits["train"], datamodule.train_collate()


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
        pack(raw, packed, short_side=256, workers=1)
        # ImageNet-style val split is carved out of train by ours: compare on the same files
        baseline = ImageFolder(
            str(raw / "train"), transform=build_train_transform(args.img_size, fast=False)
        )
        ours_raw = ours(raw, args.img_size, args.batch_size)
        baseline.samples = baseline.imgs = [(path, label) for path, label in ours_raw[0].samples]
        ours_mix = ours_raw[1]
        pipelines = {
            "torchvision ImageFolder + PIL": (baseline, ours_mix),
            "vitlab fast path": ours_raw,
            "vitlab fast path, packed (256)": ours(packed, args.img_size, args.batch_size),
        }
        best = {name: 0.0 for name in pipelines}
        for _ in range(args.rounds):
            for name, (dataset, collate) in pipelines.items():
                best[name] = max(best[name], images_per_second(dataset, collate, args.batch_size))

    reference = best["torchvision ImageFolder + PIL"]
    print(
        f"{len(ours_raw[0])} train images of 500x375 -> {args.img_size}, 1 core, best of {args.rounds}"
    )
    for name, rate in best.items():
        print(f"{name:34s} {rate:7.1f} images/s  {rate / reference:5.2f}x")


if __name__ == "__main__":
    main()
