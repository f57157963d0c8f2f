"""timm's RandAugment on PIL images and on uint8 CHW tensors: timm's draws and timm's pixels.

``RandAugment("rand-m9-mstd0.5-inc1", fill)`` is the policy that
``timm.data.create_transform(..., auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic")``
builds for DeiT and for MAE fine-tuning: ``rand_augment_transform`` with hparams
``img_mean=fill`` (the dataset mean in 0-255 ints) and bicubic warps. Per image it draws ``n``
of timm's 15 ops with replacement (``_RAND_INCREASING_TRANSFORMS`` with ``inc1``,
``_RAND_TRANSFORMS`` without); each applies with probability ``p`` at magnitude ``m`` plus
Gaussian noise of std ``mstd`` (uniform in [0, m] for ``mstd`` > 100), clipped to
[0, ``mmax``] (default 10), mapped to its argument as timm maps it (rotate up to 30 degrees,
shear 0.3, translate 45% of the side, enhance factors 0.1-1.9, posterize 4-0 bits, solarize
threshold 256-0, solarize-add 0-110), signed ops negated with probability 1/2, warps filled
with ``fill``.

Draws: from the generators timm draws from, in timm's order: numpy's global RNG picks the ops;
python's ``random`` decides whether each applies, draws its magnitude noise and the sign of a
signed op. Seeding ``random`` and ``numpy`` (DataLoader workers and ``seed_epoch`` do) fixes
them, and the same seeds give timm's draws.

Pixels: equal to timm's on both inputs, op by op (``tests/data/test_rand_augment.py``). PIL
images run timm's PIL calls. Tensors run the colour ops on uint8 with integer or float32
arithmetic that reproduces PIL's kernels bit for bit (its fixed-point luma, its truncating
float32 blend, its histogram LUTs) and take a PIL round trip for the rest: the warps (PIL's
bicubic affine resampler, which has no tensor counterpart, torch's bicubic being a different
kernel with other edges) and Sharpness (PIL's 3x3 smoothing). Each op runs where it is exact
and, among the exact choices, faster (``benchmarks/data_pipeline.py`` measures the policy).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

BICUBIC = Image.Resampling.BICUBIC
AnyImage = Image.Image | torch.Tensor

# timm's op lists, in timm's order: the op index numpy draws refers to this order
RAND_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)


@dataclass(frozen=True)
class RandAugmentConfig:
    """The fields of a timm ``rand-...`` config string, with timm's defaults."""

    magnitude: int = 10  # m
    num_layers: int = 2  # n
    prob: float = 0.5  # p
    magnitude_std: float = 0.0  # mstd; inf (mstd > 100): uniform in [0, m]
    magnitude_max: int = 10  # mmax (0 means the default, as in timm)
    increasing: bool = False  # inc


FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "m": ("magnitude", int),
    "n": ("num_layers", int),
    "p": ("prob", float),
    "mstd": ("magnitude_std", lambda value: math.inf if float(value) > 100 else float(value)),
    "mmax": ("magnitude_max", lambda value: int(value) or 10),
    "inc": ("increasing", lambda value: bool(int(value))),
}
SYNTAX = (
    "'rand' then dash-separated fields m<int> (magnitude), n<int> (ops per image), p<float> "
    "(probability of each op), mstd<float> (magnitude noise), mmax<int> (magnitude cap), "
    "inc<0|1> (timm's increasing ops), each at most once, e.g. 'rand-m9-mstd0.5-inc1' "
    "(timm's 't' op sets are not supported)"
)


def parse_rand_augment(config: str) -> RandAugmentConfig:
    """A timm RandAugment config string's fields; every field timm's ``rand_augment_transform``
    reads except ``t``. Anything else is refused (timm skips fields without digits)."""
    name, *sections = config.split("-")
    values: dict[str, Any] = {}
    bad = [] if name == "rand" else [name]
    for section in sections:
        match = re.fullmatch(r"([a-z]+)(\d.*)", section)
        if match is None or match[1] not in FIELDS or FIELDS[match[1]][0] in values:
            bad.append(section)
            continue
        field, convert = FIELDS[match[1]]
        try:
            values[field] = convert(match[2])
        except ValueError:
            bad.append(section)
    if bad:
        raise ValueError(f"auto_augment {config!r}: cannot read {bad}; expected {SYNTAX}")
    return replace(RandAugmentConfig(), **values)


# --- uint8 CHW <-> PIL ------------------------------------------------------------------------


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 RGB CHW tensor to PIL image by merging its planes (several times faster than a
    strided CHW -> HWC copy)."""
    return Image.merge("RGB", [Image.fromarray(plane) for plane in image.numpy()])


def from_pil(image: Image.Image) -> torch.Tensor:
    """RGB PIL image to a contiguous uint8 CHW tensor, plane by plane."""
    return torch.from_numpy(np.stack([np.asarray(band) for band in image.split()]))


def is_rgb_uint8(image: Any) -> bool:
    """A uint8 CHW tensor with 3 channels."""
    return (
        isinstance(image, torch.Tensor)
        and image.dtype == torch.uint8
        and image.ndim == 3
        and image.shape[0] == 3
    )


# --- magnitude to argument, as timm maps it ------------------------------------------------------


def randomly_negate(value: float) -> float:
    return -value if random.random() > 0.5 else value


def rotate_arg(level: float) -> float:
    return randomly_negate(level / 10 * 30.0)


def enhance_arg(level: float) -> float:
    return level / 10 * 1.8 + 0.1


def enhance_increasing_arg(level: float) -> float:
    return max(0.1, 1.0 + randomly_negate(level / 10 * 0.9))


def shear_arg(level: float) -> float:
    return randomly_negate(level / 10 * 0.3)


def translate_rel_arg(level: float) -> float:
    return randomly_negate(level / 10 * 0.45)


def posterize_arg(level: float) -> int:
    return int(level / 10 * 4)


def posterize_increasing_arg(level: float) -> int:
    return 4 - posterize_arg(level)


def solarize_arg(level: float) -> int:
    return min(256, int(level / 10 * 256))


def solarize_increasing_arg(level: float) -> int:
    return 256 - solarize_arg(level)


def solarize_add_arg(level: float) -> int:
    return min(128, int(level / 10 * 110))


# --- the ops on PIL images: timm's calls ---------------------------------------------------------


def posterize_mask(bits: int) -> int:
    """The mask keeping the top ``bits`` bits: 0 for 0 bits, timm's strongest posterize."""
    return 0xFF & ~(2 ** (8 - bits) - 1)


def pil_posterize(image: Image.Image, bits: int) -> Image.Image:
    """``ImageOps.posterize``'s lookup table, which timm calls; called directly because Pillow
    13 refuses 0 bits, which timm asks for at magnitude 10 with ``inc1`` (below 2.5 without),
    and which older Pillow turned into a black image."""
    if bits >= 8:
        return image
    mask = posterize_mask(bits)
    return image.point([value & mask for value in range(256)] * 3)


def pil_solarize_add(image: Image.Image, add: int) -> Image.Image:
    lut = [min(255, value + add) if value < 128 else value for value in range(256)]
    return image.point(lut * 3)


def pil_enhance(enhancer: type[ImageEnhance._Enhance], image: Image.Image, factor: float):
    return enhancer(image).enhance(factor)


def pil_rotate(image: Image.Image, degrees: float, **warp: Any) -> Image.Image:
    return image.rotate(degrees, **warp)


def pil_affine(
    matrix: Callable[[float, tuple[int, int]], tuple[float, ...]],
    image: Image.Image,
    value: float,
    **warp: Any,
) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix(value, image.size), **warp)


def shear_x_matrix(factor: float, _size: tuple[int, int]) -> tuple[float, ...]:
    return (1, factor, 0, 0, 1, 0)


def shear_y_matrix(factor: float, _size: tuple[int, int]) -> tuple[float, ...]:
    return (1, 0, 0, factor, 1, 0)


def translate_x_matrix(pct: float, size: tuple[int, int]) -> tuple[float, ...]:
    return (1, 0, pct * size[0], 0, 1, 0)


def translate_y_matrix(pct: float, size: tuple[int, int]) -> tuple[float, ...]:
    return (1, 0, 0, 0, 1, pct * size[1])


# --- the colour ops on uint8 CHW tensors, bit-exact to PIL's ------------------------------------
# numpy on the tensor's memory: its uint8 and float32 kernels are the faster ones here

VALUES = np.arange(256, dtype=np.uint8)


def point(image: torch.Tensor, lut: np.ndarray) -> torch.Tensor:
    """Map the values of ``image`` through ``lut`` (256 uint8 entries, or a row of 256 per
    channel) as PIL's ``Image.point`` does."""
    planes = image.numpy()
    if lut.ndim == 1:
        return torch.from_numpy(np.take(lut, planes))
    return torch.from_numpy(
        np.stack([np.take(row, plane) for row, plane in zip(lut, planes, strict=True)])
    )


def grayscale(planes: np.ndarray) -> np.ndarray:
    """PIL's RGB -> L (uint32): ITU-R 601-2 luma in 16-bit fixed point, rounded."""
    red, green, blue = planes.astype(np.uint32)
    luma = red * 19595
    luma += green * 38470
    luma += blue * 7471
    luma += 0x8000
    return luma >> 16


def blend(degenerate: np.ndarray | int, values: np.ndarray, factor: float) -> np.ndarray:
    """PIL's ``Image.blend(degenerate, image, factor)``, which every ``ImageEnhance`` op is:
    ``degenerate + factor * (image - degenerate)`` in float32, clipped, truncated to uint8."""
    base = np.float32(degenerate) if isinstance(degenerate, int) else degenerate.astype(np.float32)
    out = values.astype(np.float32)
    out -= base
    out *= np.float32(factor)
    out += base
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def color(image: torch.Tensor, factor: float) -> torch.Tensor:
    planes = image.numpy()
    return torch.from_numpy(blend(grayscale(planes), planes, factor))


def contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the mean luma, rounded to an integer as ``ImageEnhance.Contrast`` does."""
    planes = image.numpy()
    mean = int(int(grayscale(planes).sum()) / planes[0].size + 0.5)
    return point(image, blend(mean, VALUES, factor))


def brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return point(image, blend(0, VALUES, factor))


def auto_contrast(image: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` per channel: (value - min) * 255 / (max - min), truncated, in
    PIL's float64 steps (``value * scale + offset``) so that the truncation agrees."""
    flat = image.numpy().reshape(3, -1)
    values = np.arange(256, dtype=np.float64)
    rows = []
    for low, high in zip(flat.min(axis=1).tolist(), flat.max(axis=1).tolist(), strict=True):
        if high <= low:
            rows.append(values)
            continue
        scale = 255.0 / (high - low)
        rows.append(np.clip(np.trunc(values * scale + -low * scale), 0, 255))
    return point(image, np.stack(rows).astype(np.uint8))


def equalize(image: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize`` per channel: with ``step`` = (pixels below the top value) // 255,
    each value maps to (step // 2 + pixels below it) // step, at most 255 (identity if step is
    0)."""
    flat = image.numpy().reshape(3, -1)
    hist = np.stack([np.bincount(channel, minlength=256) for channel in flat])
    top_count = np.take_along_axis(hist, flat.max(axis=1, keepdims=True).astype(np.intp), 1)
    step = (flat.shape[1] - top_count) // 255
    below = hist.cumsum(axis=1) - hist
    lut = np.minimum((step // 2 + below) // np.maximum(step, 1), 255)
    return point(image, np.where(step > 0, lut, np.arange(256)).astype(np.uint8))


def invert(image: torch.Tensor) -> torch.Tensor:
    return image.bitwise_not()


def posterize(image: torch.Tensor, bits: int) -> torch.Tensor:
    return image if bits >= 8 else image & posterize_mask(bits)


def solarize(image: torch.Tensor, threshold: int) -> torch.Tensor:
    """Invert the values >= ``threshold`` (256: none)."""
    lut = VALUES.copy()
    lut[threshold:] = 255 - lut[threshold:]
    return point(image, lut)


def solarize_add(image: torch.Tensor, add: int) -> torch.Tensor:
    """Add to the values below 128 (add <= 128: no overflow, so no clipping)."""
    lut = VALUES.copy()
    lut[:128] += add
    return point(image, lut)


# --- the policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One of timm's ops: its magnitude-to-argument map (None: no argument), its PIL kernel
    (timm's) and its exact uint8 CHW kernel (None: tensors take a PIL round trip)."""

    level_to_arg: Callable[[float], float] | None
    pil: Callable[..., Image.Image]
    tensor: Callable[..., torch.Tensor] | None = None

    def __call__(self, image: AnyImage, level: float) -> AnyImage:
        args = () if self.level_to_arg is None else (self.level_to_arg(level),)
        if isinstance(image, Image.Image):
            return self.pil(image, *args)
        if self.tensor is None:
            return from_pil(self.pil(to_pil(image), *args))
        return self.tensor(image, *args)


def build_ops(fill: Sequence[int], resample: Image.Resampling) -> dict[str, Op]:
    """Every op of timm's two RandAugment lists; the warps fill with ``fill``."""
    warp = {"fillcolor": tuple(fill), "resample": resample}
    enhance = {
        "Color": (ImageEnhance.Color, color),
        "Contrast": (ImageEnhance.Contrast, contrast),
        "Brightness": (ImageEnhance.Brightness, brightness),
        "Sharpness": (ImageEnhance.Sharpness, None),
    }
    ops = {
        "AutoContrast": Op(None, ImageOps.autocontrast, auto_contrast),
        "Equalize": Op(None, ImageOps.equalize, equalize),
        "Invert": Op(None, ImageOps.invert, invert),
        "Rotate": Op(rotate_arg, partial(pil_rotate, **warp)),
        "Posterize": Op(posterize_arg, pil_posterize, posterize),
        "PosterizeIncreasing": Op(posterize_increasing_arg, pil_posterize, posterize),
        "Solarize": Op(solarize_arg, ImageOps.solarize, solarize),
        "SolarizeIncreasing": Op(solarize_increasing_arg, ImageOps.solarize, solarize),
        "SolarizeAdd": Op(solarize_add_arg, pil_solarize_add, solarize_add),
        "ShearX": Op(shear_arg, partial(pil_affine, shear_x_matrix, **warp)),
        "ShearY": Op(shear_arg, partial(pil_affine, shear_y_matrix, **warp)),
        "TranslateXRel": Op(translate_rel_arg, partial(pil_affine, translate_x_matrix, **warp)),
        "TranslateYRel": Op(translate_rel_arg, partial(pil_affine, translate_y_matrix, **warp)),
    }
    for name, (enhancer, tensor) in enhance.items():
        ops[name] = Op(enhance_arg, partial(pil_enhance, enhancer), tensor)
        ops[f"{name}Increasing"] = Op(
            enhance_increasing_arg, partial(pil_enhance, enhancer), tensor
        )
    return ops


class RandAugment:
    """timm's RandAugment policy for a ``rand-...`` config string (see the module docstring),
    on PIL images and uint8 RGB CHW tensors, returning the same kind."""

    def __init__(self, config: str, fill: Sequence[int], resample: Image.Resampling = BICUBIC):
        self.config_str = config
        self.config = parse_rand_augment(config)
        self.names = RAND_INCREASING_TRANSFORMS if self.config.increasing else RAND_TRANSFORMS
        ops = build_ops(fill, resample)
        self.ops = [ops[name] for name in self.names]

    def __call__(self, image: AnyImage) -> AnyImage:
        if not isinstance(image, Image.Image) and not is_rgb_uint8(image):
            got = (
                f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else image
            )
            raise TypeError(f"RandAugment takes PIL images or uint8 RGB CHW tensors, got {got!r}")
        for index in np.random.choice(len(self.ops), self.config.num_layers):
            image = self.apply(self.ops[index], image)
        return image

    def apply(self, op: Op, image: AnyImage) -> AnyImage:
        """``op`` with probability ``p``, at a drawn magnitude (timm's ``AugmentOp``)."""
        if self.config.prob < 1.0 and random.random() > self.config.prob:
            return image
        return op(image, self.draw_magnitude())

    def draw_magnitude(self) -> float:
        config = self.config
        magnitude: float = config.magnitude
        if config.magnitude_std == math.inf:
            magnitude = random.uniform(0, magnitude)
        elif config.magnitude_std > 0:
            magnitude = random.gauss(magnitude, config.magnitude_std)
        return max(0.0, min(magnitude, config.magnitude_max))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config_str!r})"
