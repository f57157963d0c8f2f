"""timm's RandAugment on PIL images and uint8 tensors: the config strings timm reads, and the same
draws and the same pixels as timm's own policy (tolerance 0 for every op, on both inputs)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from timm.data import auto_augment as timm_aa
from timm.data import create_transform

from vitlab.data.rand_augment import (
    BICUBIC,
    RAND_INCREASING_TRANSFORMS,
    RAND_TRANSFORMS,
    RandAugment,
    RandAugmentConfig,
    build_ops,
    from_pil,
    parse_rand_augment,
    to_pil,
)
from vitlab.data.synthetic import synthetic_image
from vitlab.data.transforms import DEIT_AUTO_AUGMENT, build_train_transform

FILL = (124, 116, 104)  # timm's img_mean for ImageNet's mean
TIMM_HPARAMS = {"img_mean": FILL, "interpolation": BICUBIC, "translate_const": 100}


def sample_images() -> list[Image.Image]:
    """Photo-like images of odd sizes, plus the edge cases of the histogram ops: a flat
    image, a low-contrast one, two-valued noise and full-range noise."""
    rng = np.random.default_rng(0)
    photos = [synthetic_image((61, 47), k, rng) for k in range(3)]
    flat = Image.new("RGB", (9, 7), (3, 200, 7))
    dull = ImageEnhance.Contrast(photos[0]).enhance(0.15)
    two_valued = Image.fromarray(rng.integers(100, 102, (23, 31, 3), dtype=np.uint8))
    noise = Image.fromarray(rng.integers(0, 256, (33, 29, 3), dtype=np.uint8))
    return [*photos, flat, dull, two_valued, noise]


IMAGES = sample_images()


def timm_result(transform: Callable[[Image.Image], Image.Image], image: Image.Image) -> Image.Image:
    """What timm's ``transform`` gives, or a black image where it posterizes to 0 bits: Pillow 13
    refuses that (timm asks for it at magnitude 10 with inc1, below 2.5 without); older Pillow
    returned black, and so does vitlab."""
    try:
        return transform(image)
    except ValueError as error:
        if "bits must be" not in str(error):
            raise
        return Image.new("RGB", image.size)


def same_pixels(image: Image.Image | torch.Tensor, expected: Image.Image) -> bool:
    tensor = image if isinstance(image, torch.Tensor) else from_pil(image)
    return tensor.dtype == torch.uint8 and torch.equal(tensor, from_pil(expected))


def test_parse_reads_the_fields_timm_reads():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == RandAugmentConfig(
        magnitude=9, magnitude_std=0.5, increasing=True
    )
    assert parse_rand_augment("rand-n3-p0.8-m7-mmax20-inc0") == RandAugmentConfig(
        magnitude=7, num_layers=3, prob=0.8, magnitude_max=20
    )
    # as in timm: mstd above 100 samples uniformly, mmax0 keeps the default cap
    assert parse_rand_augment("rand-mstd101-mmax0") == RandAugmentConfig(magnitude_std=math.inf)
    assert parse_rand_augment("rand") == RandAugmentConfig()


def test_parse_refuses_every_unreadable_field_in_one_error():
    with pytest.raises(ValueError, match=r"\['x3', 'tweights', 'inc', 'm8', 'n2.5'\]"):
        parse_rand_augment("rand-m9-x3-tweights-inc-m8-n2.5")
    with pytest.raises(ValueError, match="'rand' then dash-separated fields"):
        parse_rand_augment("augmix-m9")


def test_op_lists_are_timms():
    assert tuple(timm_aa._RAND_TRANSFORMS) == RAND_TRANSFORMS
    assert tuple(timm_aa._RAND_INCREASING_TRANSFORMS) == RAND_INCREASING_TRANSFORMS


@pytest.mark.parametrize("name", sorted(set(RAND_TRANSFORMS) | set(RAND_INCREASING_TRANSFORMS)))
def test_each_op_gives_timms_pixels_on_tensors_and_pil(name: str):
    timm_op = timm_aa.AugmentOp(name, prob=1.0, magnitude=0, hparams=TIMM_HPARAMS)
    op = build_ops(FILL, BICUBIC)[name]
    for level in (0, 1, 3.7, 5, 9, 10):
        timm_op.magnitude = level
        for index, image in enumerate(IMAGES):
            # the seed fixes the sign of signed ops; both draw it from python's random
            random.seed(index)
            expected = timm_result(timm_op, image)
            random.seed(index)
            on_tensor = op(from_pil(image), level)
            random.seed(index)
            on_pil = op(image, level)
            assert isinstance(on_pil, Image.Image)
            assert same_pixels(on_pil, expected), (name, level, index)
            assert same_pixels(on_tensor, expected), (name, level, index)


def timm_policy(config: str) -> timm_aa.RandAugment:
    """The RandAugment that timm's create_transform builds for DeiT / MAE fine-tuning."""
    _, secondary, _ = create_transform(
        224, is_training=True, auto_augment=config, interpolation="bicubic", separate=True
    )
    (policy,) = secondary.transforms
    return policy


@pytest.mark.parametrize(
    "config", ["rand-m9-mstd0.5-inc1", "rand-m9-n2", "rand-m7-n3-p0.9-mstd101-mmax12-inc1"]
)
def test_policy_draws_and_pixels_match_timms(config: str):
    reference = timm_policy(config)
    policy = RandAugment(config, FILL)
    assert [op.name for op in reference.ops] == list(policy.names)
    compared = 0
    for seed in range(60):
        image = IMAGES[seed % 3]
        random.seed(seed)
        np.random.seed(seed)
        try:
            expected = reference(image)
        except ValueError as error:  # posterize to 0 bits: see timm_result
            assert "bits must be" in str(error)
            continue
        compared += 1
        after_timm = (random.random(), np.random.random())
        for on in (from_pil(image), image):
            random.seed(seed)
            np.random.seed(seed)
            assert same_pixels(policy(on), expected), (config, seed, type(on))
            # the same number of draws from each generator
            assert (random.random(), np.random.random()) == after_timm
    assert compared >= 55


def test_policy_returns_the_input_kind():
    tensor = from_pil(IMAGES[0])
    policy = RandAugment("rand-m9-n4-p1.0", FILL)
    out = policy(tensor)
    assert type(out) is torch.Tensor and out.shape == tensor.shape and out.dtype == torch.uint8
    assert isinstance(policy(IMAGES[0]), Image.Image)
    with pytest.raises(TypeError, match="uint8 RGB CHW"):
        policy(tensor.float())


def test_pil_round_trip_keeps_the_pixels():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    assert np.array_equal(np.asarray(to_pil(image)), image.permute(1, 2, 0).numpy())
    assert torch.equal(from_pil(to_pil(image)), image)


@pytest.mark.parametrize("fast", [True, False])
def test_train_transform_runs_timms_policy_with_the_dataset_means_fill(fast: bool):
    # an identity crop (the whole square image at its own size) leaves only the policy, which
    # must be the one timm's create_transform builds for this mean (CIFAR-10's)
    mean = (0.4914, 0.4822, 0.4465)
    image = synthetic_image((40, 40), 1, np.random.default_rng(1))
    transform = build_train_transform(40, mean, scale=(1, 1), ratio=(1, 1), hflip=0.0, fast=fast)
    _, reference, _ = create_transform(
        40,
        is_training=True,
        auto_augment=DEIT_AUTO_AUGMENT,
        interpolation="bicubic",
        mean=mean,
        separate=True,
    )
    for seed in range(40):
        random.seed(seed)
        np.random.seed(seed)
        expected = timm_result(reference, image)
        random.seed(seed)
        np.random.seed(seed)
        assert same_pixels(transform(image), expected), seed
