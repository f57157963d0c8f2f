"""Reading image files: PIL for any format, TorchCodec for JPEGs, reduced-size JPEG decoding."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import torch
from PIL import Image
from torchcodec.decoders import decode_jpeg

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".tif", ".tiff"})
# PIL raises these for unreadable, truncated or malformed files
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str, min_side: int | None = None) -> Image.Image:
    """Decode an image as RGB with PIL; see ``reduced_rgb`` for ``min_side``."""
    with Image.open(path) as image:
        return reduced_rgb(image, min_side)


def reduced_rgb(image: Image.Image, min_side: int | None) -> Image.Image:
    """``image`` as RGB; a JPEG only at the smallest DCT scale whose shorter side is still
    ``min_side`` or more (``Image.draft``: less decoding work for large photos)."""
    if min_side is not None:
        width, height = image.size
        factor = min(1.0, min_side / min(width, height))
        image.draft("RGB", (math.ceil(width * factor), math.ceil(height * factor)))
    return image.convert("RGB")


def decode_image(path: str, min_side: int | None = None) -> torch.Tensor | Image.Image:
    """The fast path's decode of an image file (see ``decode_bytes``)."""
    return decode_bytes(Path(path).read_bytes(), min_side)


def decode_bytes(data: bytes, min_side: int | None = None) -> torch.Tensor | Image.Image:
    """The fast path's decode: a JPEG straight into a uint8 CHW tensor by TorchCodec (faster than
    PIL, and no conversion after); a JPEG at least twice ``min_side`` at reduced size
    by ``reduced_rgb``; other formats by PIL."""
    with Image.open(io.BytesIO(data)) as image:
        reducible = min_side is not None and min(image.size) >= 2 * min_side
        if image.format != "JPEG" or reducible:
            return reduced_rgb(image, min_side)
    try:
        return decode_jpeg(data)
    except RuntimeError as error:
        raise OSError(str(error)) from error
