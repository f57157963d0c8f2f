"""Generated image-folder trees of real JPEG/PNG files, for tests and the data benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_image(size: tuple[int, int], label: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like image (smooth colour field plus grain) whose mean colour depends on ``label``."""
    width, height = size
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    coarse[..., label % 3] = 220
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    return Image.fromarray((smooth + grain).clip(0, 255).astype(np.uint8))


def write_image_tree(
    root: Path,
    splits: dict[str, int],
    num_classes: int = 3,
    size: tuple[int, int] = (40, 30),
    png_every: int = 4,
    seed: int = 0,
) -> list[Path]:
    """``root/<split>/class_<k>/<i>.JPEG`` with ``splits[split]`` images per class; every
    ``png_every``-th image is a PNG instead. Returns the written files."""
    rng = np.random.default_rng(seed)
    written = []
    for split, per_class in splits.items():
        for label in range(num_classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                suffix = ".png" if png_every and index % png_every == png_every - 1 else ".JPEG"
                path = folder / f"{index:05d}{suffix}"
                synthetic_image(size, label, rng).save(path, quality=90)
                written.append(path)
    return written
