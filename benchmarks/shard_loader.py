"""Train-loader throughput per CPU core: LitData streaming shards (``data=imagenet_shards``) vs the
packed image-folder copy (``data=imagenet`` on a ``vitlab.data.pack`` tree), same augmentation.

    python benchmarks/shard_loader.py [--images 96] [--img-size 224] [--rounds 3]

Both are packed by ``vitlab.data.pack`` from the same generated ~500x375 JPEGs (ImageNet's typical
size) to a 288 shorter side, so both loaders decode the same JPEG bytes and apply the same DeiT
transform (RandomResizedCrop, flip, RandAugment): they differ in where the bytes come from (one
file per image vs 64 MB LitData chunks) and in the loader (``StreamingDataLoader`` vs
``DataLoader`` + sampler). One process, one thread, no loader workers, timed in this process's
CPU seconds (LitData's reader threads included): images/s per core. Rounds alternate and the
best of each counts. Also printed: what a shard stores per image as JPEG bytes against decoded
uint8, and the share of the loader's CPU time that decoding takes (what uint8 shards would save).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from data_pipeline import add_loader_arguments
from litdata import StreamingDataset

from vitlab.data.base import SplitsDataModule
from vitlab.data.decode import decode_bytes
from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.pack import pack, pack_shards
from vitlab.data.shards import ShardsDataModule
from vitlab.data.synthetic import write_image_tree


def images_per_second(datamodule: SplitsDataModule) -> float:
    started = time.process_time()
    seen = sum(len(images) for images, _ in datamodule.train_dataloader())
    return seen / (time.process_time() - started)


def decode_ms(shards: Path) -> tuple[float, float, float]:
    """(JPEG KB, uint8 KB) per image of the train shards, and ms per image to decode them."""
    items = [dict(item) for item in StreamingDataset(str(shards / "train"))]
    started = time.process_time()
    images = [decode_bytes(bytes(item["image"])) for item in items]
    ms = 1000 * (time.process_time() - started) / len(items)
    jpeg = sum(len(item["image"]) for item in items) / len(items) / 1024
    return jpeg, sum(image.numel() for image in images) / len(images) / 1024, ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_loader_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        raw, packed, shards = Path(tmp) / "raw", Path(tmp) / "packed", Path(tmp) / "shards"
        sizes = {"train": args.images, "val": 1}
        write_image_tree(raw, sizes, num_classes=2, size=(500, 375), png_every=0)
        pack(raw, packed, workers=1)
        pack_shards(raw, shards, workers=1)
        common = dict(img_size=args.img_size, batch_size=args.batch_size, num_workers=0, mix={})
        baseline = "packed image folder"
        datamodules = {
            baseline: ImageFolderDataModule(packed, **common),
            "LitData shards": ShardsDataModule(str(shards), **common),
        }
        best = {name: 0.0 for name in datamodules}
        for datamodule in datamodules.values():
            datamodule.setup()
        for _ in range(args.rounds):
            for name, datamodule in datamodules.items():
                best[name] = max(best[name], images_per_second(datamodule))
        jpeg_kb, uint8_kb, ms = decode_ms(shards)

    print(f"{2 * args.images} train images of 500x375 -> 288 -> {args.img_size}, 1 core")
    for name, rate in best.items():
        print(f"{name:20s} {rate:7.1f} images/s  {rate / best[baseline]:5.2f}x")
    share = ms * best["LitData shards"] / 1000
    print(
        f"per image: JPEG {jpeg_kb:.1f} KB vs uint8 {uint8_kb:.1f} KB ({uint8_kb / jpeg_kb:.1f}x); "
        f"decode {ms:.2f} ms = {share:.0%} of the shard loader's CPU time"
    )


if __name__ == "__main__":
    main()
