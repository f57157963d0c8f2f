"""Write a pre-resized JPEG copy of an image-folder tree, once, for faster training reads.

    python -m vitlab.data.pack data/imagenet data/imagenet_288 --short-side 288
    python -m vitlab.data.pack data/imagenet data/imagenet_shards --format shards

Every image whose shorter side exceeds ``--short-side`` is downscaled to it (never upscaled) and
stored as ``<dest>/<split>/<class>/<name>.JPEG``; other files are copied as they are (class-name
files) or skipped (stray files, unreadable images: counted and named). The result is an ordinary
tree: point ``data.root`` at it. A 288 shorter side keeps eval (resize 256, crop 224) exact and
decodes faster than ImageNet's originals (``benchmarks/data_pipeline.py`` measures both).

``--format shards`` writes the same resized JPEGs as LitData shards instead (the
``vitlab[shards]`` extra): ``<dest>/{train,val}`` with items ``{"image": JPEG bytes, "label":
class index}`` (class folders of train/, sorted) and ``<dest>/meta``, one item: the class names
and the split sizes,
which ``data=imagenet_shards`` streams from that folder or from any URL LitData reads (copy it
to a bucket). JPEG bytes, not decoded uint8: ~10x fewer bytes to stream at a 288 shorter side,
for a decode that is a quarter to a third of the loader's work (``benchmarks/shard_loader.py``).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from PIL import Image

from vitlab.data.imagefolder import (
    CLASS_NAMES_FILE,
    DECODE_ERRORS,
    class_folders,
    is_image,
    load_image,
    read_class_names,
    scan_split,
)
from vitlab.errors import UserError, exit_on_user_error
from vitlab.extras import require

# the splits a shard folder holds (ImageNet's; data=imagenet_shards tests on val), and the folder
# of its one metadata item (class names, split sizes: the same for every rank that reads it)
SHARD_SPLITS = ("train", "val")
META = "meta"
# LitData's chunk size: large sequential reads from an object store, a few chunks per worker
CHUNK_BYTES = "64MB"


def resized(source: Path, short_side: int) -> Image.Image:
    """An image with its shorter side downscaled to ``short_side`` (never upscaled)."""
    image = load_image(str(source), short_side)
    scale = short_side / min(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.BICUBIC, reducing_gap=3.0)
    return image


def pack_image(job: tuple[Path, Path, int, int]) -> str | None:
    """Resize one image into place; the error text when it cannot be decoded."""
    source, dest, short_side, quality = job
    try:
        image = resized(source, short_side)
    except DECODE_ERRORS as error:
        return f"{source}: {error}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest, "JPEG", quality=quality)
    return None


def pack_jobs(source: Path, dest: Path, short_side: int, quality: int) -> tuple[list, list[Path]]:
    """(resize jobs for the images, other files) under ``source``."""
    jobs, others = [], []
    for folder, _, names in os.walk(source):
        for name in sorted(names):
            path = Path(folder) / name
            target = dest / path.relative_to(source)
            if is_image(name):
                jobs.append((path, target.with_suffix(".JPEG"), short_side, quality))
            else:
                others.append(path)
    return jobs, others


def pack(
    source: Path, dest: Path, short_side: int = 288, quality: int = 90, workers: int = 1
) -> dict:
    """Pack ``source`` into ``dest``; returns (and writes as ``dest/pack.json``) a summary."""
    jobs, others = pack_jobs(source, dest, short_side, quality)
    with Pool(workers) as pool:
        errors = [error for error in pool.imap_unordered(pack_image, jobs, chunksize=64) if error]
    copied = [path for path in others if path.parent == source]
    for path in copied:
        shutil.copy2(path, dest / path.name)
    summary = {
        "source": str(source),
        "short_side": short_side,
        "quality": quality,
        "images": len(jobs) - len(errors),
        "unreadable": errors,
        "skipped_other_files": len(others) - len(copied),
    }
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "pack.json").write_text(json.dumps(summary, indent=2))
    return summary


def shard_item(job: tuple[Path, int, int, int]) -> dict[str, Any] | str:
    """One image as a shard item (resized JPEG bytes, class index), or the error text when it
    cannot be decoded."""
    source, label, short_side, quality = job
    try:
        image = resized(source, short_side)
    except DECODE_ERRORS as error:
        return f"{source}: {error}"
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=quality)
    return {"image": encoded.getvalue(), "label": label}


def readable(results: Iterable[dict[str, Any] | str], errors: list[str]) -> Iterator[dict]:
    """The items among ``results``; the error texts are appended to ``errors``."""
    for result in results:
        if isinstance(result, str):
            errors.append(result)
        else:
            yield result


def write_shards(folder: Path, items: Iterable[dict[str, Any]]) -> int:
    """``items`` as a LitData dataset in ``folder`` (chunks + index.json, what
    ``litdata.optimize`` writes); the number written."""
    from litdata.streaming.writer import BinaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    writer = BinaryWriter(str(folder), chunk_bytes=CHUNK_BYTES)
    count = 0
    for count, item in enumerate(items, 1):
        writer[count - 1] = item
    writer.done()
    writer.merge()
    return count


def pack_shards(
    source: Path, dest: Path, short_side: int = 288, quality: int = 90, workers: int = 1
) -> dict:
    """Pack ``source``'s train and val splits into LitData shards under ``dest``; returns (and
    writes as ``dest/pack.json``) a summary."""
    require("shards", "--format shards")
    for split in SHARD_SPLITS:
        if not (source / split).is_dir():
            raise UserError(f"source: no directory {source / split}; shards need train/ and val/")
    classes, _ = class_folders(source / "train")
    sizes, errors, skipped = {}, [], 0
    with Pool(workers) as pool:
        for split in SHARD_SPLITS:
            samples, others = scan_split(source / split, classes)
            jobs = [(Path(path), label, short_side, quality) for path, label in samples]
            # in order: the shards keep the tree's order
            results = pool.imap(shard_item, jobs, chunksize=64)
            sizes[split] = write_shards(dest / split, readable(results, errors))
            skipped += others
    names = read_class_names(source / CLASS_NAMES_FILE, classes)
    write_shards(dest / META, [{"class_names": json.dumps(names), "sizes": json.dumps(sizes)}])
    images = sum(sizes.values())
    summary = {
        "source": str(source),
        "format": "shards",
        "short_side": short_side,
        "quality": quality,
        "images": images,
        "unreadable": errors,
        "skipped_other_files": skipped,
        "classes": len(names),
    }
    (dest / "pack.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitlab.data.pack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("source", type=Path, help="tree with <split>/<class>/<image>")
    parser.add_argument("dest", type=Path, help="where to write the resized tree")
    parser.add_argument("--short-side", type=int, default=288)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--format",
        choices=("tree", "shards"),
        default="tree",
        help="tree: an image-folder tree of JPEGs; shards: LitData shards (data=imagenet_shards)",
    )
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"no such directory: {args.source}")
    if args.format == "shards":
        with exit_on_user_error(functools.partial(print, file=sys.stderr)):
            summary = pack_shards(
                args.source, args.dest, args.short_side, args.quality, args.workers
            )
    else:
        summary = pack(args.source, args.dest, args.short_side, args.quality, args.workers)
    for error in summary["unreadable"]:
        print(f"skipped unreadable image {error}")
    print(
        f"packed {summary['images']} images into {args.dest} (shorter side <= {args.short_side}); "
        f"skipped {len(summary['unreadable'])} unreadable images and "
        f"{summary['skipped_other_files']} other files"
    )


if __name__ == "__main__":
    main()
