"""Held-out digits, and digits written as image files (for predict.py and the export)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from vitlab.data.digits import DigitsDataModule


def held_out_digits(count: int) -> torch.Tensor:
    """The first ``count`` digits of the test split, (count, 1, 8, 8) in [0, 1]."""
    digits = DigitsDataModule()
    digits.setup()
    return digits.splits["test"].images[:count]


def write_digit(image: torch.Tensor, path: Path, size: int = 8, mode: str = "L") -> Path:
    """A digit in [0, 1] as an 8-bit PNG, upscaled to ``size`` by nearest neighbours, in
    ``mode``."""
    pixels = (image[0] * 255).round().to(torch.uint8).numpy()
    gray = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    gray.convert(mode).save(path)
    return path
