"""A consumer of ``python -m vitlab.export``'s files: config.json and model.safetensors read with
torch, PIL and the ViT definition, nothing else of vitlab, following the format that
``vitlab.export``'s docstring documents."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from vitlab.models.vit import VisionTransformer

Picture = Image.Image | torch.Tensor
PIL_FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def load_export(folder: Path) -> tuple[VisionTransformer, dict[str, Any]]:
    config = json.loads((folder / "config.json").read_text())
    model = VisionTransformer(**config["model"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), config


def height_width(image: Picture) -> tuple[int, int]:
    if isinstance(image, Image.Image):
        return image.height, image.width
    return image.shape[-2], image.shape[-1]


def target_size(height: int, width: int, size: int | list[int]) -> tuple[int, int]:
    if isinstance(size, list):
        return size[0], size[1]
    longer = int(size * max(height, width) / min(height, width))
    return (size, longer) if height <= width else (longer, size)


def resize(image: Picture, size: int | list[int], interpolation: str) -> Picture:
    height, width = target_size(*height_width(image), size)
    if isinstance(image, Image.Image):
        return image.resize((width, height), PIL_FILTERS[interpolation])
    if (height, width) == height_width(image):
        return image
    return F.interpolate(
        image[None], (height, width), mode=interpolation, align_corners=False, antialias=True
    )[0]


def center_crop(image: Picture, size: list[int]) -> Picture:
    height, width = height_width(image)
    top, left = round((height - size[0]) / 2), round((width - size[1]) / 2)
    if isinstance(image, Image.Image):
        return image.crop((left, top, left + size[1], top + size[0]))
    return image[..., top : top + size[0], left : left + size[1]]


def to_tensor(image: Image.Image) -> torch.Tensor:
    pixels = np.array(image)
    return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)


def normalize(image: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    return (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


STEPS = {
    "convert": lambda image, mode: image.convert(mode),
    "resize": resize,
    "center_crop": center_crop,
    "to_tensor": to_tensor,
    "scale": lambda image: image.float() / 255,
    "normalize": normalize,
}


def preprocess(steps: list[dict[str, Any]], path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        picture: Picture = image
        for step in steps:
            arguments = {key: value for key, value in step.items() if key != "op"}
            picture = STEPS[step["op"]](picture, **arguments)
    return picture


def probabilities(folder: Path, paths: Sequence[Path]) -> torch.Tensor:
    """The exported model's class probabilities for these image files, (len(paths), classes)."""
    model, config = load_export(folder)
    images = torch.stack([preprocess(config["preprocessing"], path) for path in paths])
    with torch.no_grad():
        return model(images).softmax(dim=-1)
