"""Write a pre-resized JPEG copy of an image-folder tree, once, for faster training reads.

    python -m vitlab.data.pack data/imagenet data/imagenet_288 --short-side 288

Every image whose shorter side exceeds ``--short-side`` is downscaled to it (never upscaled) and
stored as ``<dest>/<split>/<class>/<name>.JPEG``; other files are copied as they are (class-name
files) or skipped (stray files, unreadable images: counted and named). The result is an ordinary
tree: point ``data.root`` at it. A 288 shorter side keeps eval (resize 256, crop 224) exact and
decodes faster than ImageNet's originals (``benchmarks/data_pipeline.py`` measures both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from vitlab.data.imagefolder import DECODE_ERRORS, is_image, load_image


def pack_image(job: tuple[Path, Path, int, int]) -> str | None:
    """Resize one image into place; the error text when it cannot be decoded."""
    source, dest, short_side, quality = job
    try:
        image = load_image(str(source), short_side)
    except DECODE_ERRORS as error:
        return f"{source}: {error}"
    scale = short_side / min(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.BICUBIC, reducing_gap=3.0)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitlab.data.pack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("source", type=Path, help="tree with <split>/<class>/<image>")
    parser.add_argument("dest", type=Path, help="where to write the resized tree")
    parser.add_argument("--short-side", type=int, default=288)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"no such directory: {args.source}")
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
