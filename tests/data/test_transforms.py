"""Train/eval transforms (uint8 crops, crop ratio, the MAE eval rule), timm's random erasing and
the batch step: normalisation, erasing and the MixUp/CutMix soft targets."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from timm.data.random_erasing import RandomErasing as TimmRandomErasing
from torchvision.transforms import v2

from vitlab.cli import CONFIG_PATH
from vitlab.data.synthetic import synthetic_image
from vitlab.data.transforms import (
    DEIT_AUTO_AUGMENT,
    BatchMix,
    BatchResizedCrop,
    BatchStep,
    Normalize,
    RandomErasing,
    build_erasing,
    build_eval_transform,
    build_train_transform,
    collate_present,
    eval_resize_size,
    min_decode_side,
)

PHOTO = synthetic_image((50, 40), 0, np.random.default_rng(0))
CONF = Path(CONFIG_PATH) / "data"


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("auto_augment", [DEIT_AUTO_AUGMENT, "rand-m9-n4-p1.0", None])
def test_train_transform_outputs_uint8_crops(fast: bool, auto_augment: str | None):
    transform = build_train_transform(32, auto_augment=auto_augment, color_jitter=0.4, fast=fast)
    image = transform(PHOTO)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert image.min() < image.max()


def test_fast_train_transform_takes_decoded_tensors():
    photo = torch.from_numpy(np.array(PHOTO)).permute(2, 0, 1)
    image = build_train_transform(32)(photo)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


@pytest.mark.parametrize("auto_augment", ["trivial", "augmix-m5", "rand-m9-w0"])
def test_other_policies_and_unknown_fields_are_errors(auto_augment: str):
    with pytest.raises(ValueError, match="auto_augment"):
        build_train_transform(32, auto_augment=auto_augment)


def test_the_deit_preset_is_the_papers_recipe():
    preset = OmegaConf.load(CONF / "augment" / "deit.yaml").train_transform
    assert preset.auto_augment == DEIT_AUTO_AUGMENT == "rand-m9-mstd0.5-inc1"
    assert (preset.erase_prob, preset.erase_mode) == (0.25, "pixel")
    assert OmegaConf.load(CONF / "common" / "rgb.yaml").eval_crop_pct == 0.875


def normalised_batch(size: int = 64) -> torch.Tensor:
    return torch.randn(size, 3, 24, 20)


@pytest.mark.parametrize(
    ("prob", "mode"), [(0.25, "pixel"), (1.0, "pixel"), (0.5, "rand"), (0.5, "const")]
)
def test_erasing_is_timms_random_erasing(prob: float, mode: str):
    images = normalised_batch()
    reference = TimmRandomErasing(prob, mode=mode, max_count=1, device="cpu")
    random.seed(0)
    torch.manual_seed(0)
    expected = reference(images.clone())
    after_timm = (random.random(), torch.rand(()).item())
    random.seed(0)
    torch.manual_seed(0)
    erased = RandomErasing(prob, mode)(images.clone())
    assert torch.equal(erased, expected)
    assert (random.random(), torch.rand(()).item()) == after_timm
    touched = (erased != images).flatten(1).any(dim=1)
    assert 0 < touched.sum() <= len(images) and (touched.all() or prob < 1)


def test_erased_boxes_cover_two_percent_to_a_third_and_hold_noise():
    random.seed(1)
    torch.manual_seed(1)
    images = torch.full((200, 3, 32, 32), 7.0)
    erased = RandomErasing(1.0, "pixel")(images).ne(7.0)
    areas = erased[:, 0].flatten(1).float().mean(dim=1)
    assert areas.min() >= 0.02 * 0.9 and areas.max() <= 1 / 3 * 1.1
    noise = images[erased]
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05


def test_build_erasing_takes_the_config_keys_and_checks_the_mode():
    assert build_erasing(erase_prob=0.0) is None
    assert build_erasing().prob == 0.25 and build_erasing().mode == "pixel"
    with pytest.raises(ValueError, match="erase_mode"):
        build_erasing(erase_mode="noise")


@pytest.mark.parametrize("fast", [True, False])
def test_eval_resizes_by_the_crop_ratio_then_center_crops(fast: bool):
    assert eval_resize_size(224, 0.875) == 256
    # a 256x256 black square in a 16-pixel white frame: resize to 256 is a no-op, and the
    # 224 center crop cuts exactly the frame away
    framed = np.full((256, 256, 3), 255, np.uint8)
    framed[16:-16, 16:-16] = 0
    cropped = build_eval_transform(224, crop_pct=0.875, fast=fast)(Image.fromarray(framed))
    assert cropped.shape == (3, 224, 224) and cropped.dtype == torch.uint8
    assert cropped.max() == 0
    whole = build_eval_transform(224, crop_pct=1.0, fast=fast)(Image.fromarray(framed))
    assert whole.max() == 255


def test_eval_crop_null_is_the_mae_releases_rule():
    # int(size / crop_pct) with crop_pct 224/256 up to 224 px and 1.0 above (util/datasets.py)
    assert [eval_resize_size(size, None) for size in (112, 224, 256, 384, 448)] == [
        128,
        256,
        256,
        384,
        448,
    ]
    # DeiT's 0.875 at every size
    assert eval_resize_size(384, 0.875) == 438
    framed = np.full((256, 256, 3), 255, np.uint8)
    framed[16:-16, 16:-16] = 0
    whole = build_eval_transform(256, crop_pct=None)(Image.fromarray(framed))
    assert whole.shape == (3, 256, 256) and torch.equal(whole[0], torch.from_numpy(framed[..., 0]))


def test_decode_side_keeps_the_smallest_crop_at_full_resolution():
    assert min_decode_side(build_train_transform(224, scale=(0.25, 1.0))) == 448
    assert min_decode_side(build_eval_transform(224)) == 256
    assert min_decode_side(build_eval_transform(384, None)) == 384


def constant_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample k is an image filled with the value k, labelled k: mixing shows in the pixels."""
    return torch.arange(size).float().view(size, 1, 1, 1).expand(size, 1, 8, 8), torch.arange(size)


def test_mixup_targets_sum_to_one_and_match_the_mixing_coefficient():
    torch.manual_seed(0)
    images, targets = BatchMix(num_classes=6, cutmix_alpha=0.0)(*constant_batch(6))
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))
    # image k is the constant k, so a blend's pixels are the target-weighted mean of the classes
    classes = torch.arange(6, dtype=torch.float32)
    for image, target in zip(images, targets, strict=True):
        assert (target > 0).sum() == 2
        torch.testing.assert_close(image, torch.full_like(image, float(target @ classes)))


def test_cutmix_targets_match_the_pasted_area():
    torch.manual_seed(1)
    images, targets = BatchMix(num_classes=6, mixup_alpha=0.0, switch_prob=1.0)(*constant_batch(6))
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))
    for image, target in zip(images, targets, strict=True):
        for k in range(6):
            torch.testing.assert_close(target[k], (image == k).float().mean())


def test_copies_side_by_side_are_mostly_mixed_with_other_images():
    # one process with repeated augmentation: each image's copies are neighbours in the batch
    torch.manual_seed(0)
    labels = torch.arange(16).repeat_interleave(2)
    _, targets = BatchMix(num_classes=16, cutmix_alpha=0.0)(torch.zeros(32, 3, 4, 4), labels)
    mixed_with_another = (targets > 0).sum(dim=1) == 2
    assert mixed_with_another.float().mean() > 0.75


def test_unmixed_batches_get_one_hot_targets():
    images, targets = BatchMix(num_classes=4, prob=0.0)(*constant_batch(4))
    torch.testing.assert_close(targets, torch.eye(4))
    assert images[2].eq(2).all()


def test_batch_step_normalises_every_batch_and_mixes_training_batches_only():
    images = torch.full((4, 3, 2, 2), 255, dtype=torch.uint8)
    images[0] = 0
    step = BatchStep((0.5,) * 3, (0.5,) * 3, num_classes=4, mix={"cutmix_alpha": 0.0})
    evaluated, labels = step((images, torch.arange(4)), train=False)
    assert evaluated.dtype == torch.float32 and labels.tolist() == [0, 1, 2, 3]
    assert evaluated[0].eq(-1).all() and evaluated[1:].eq(1).all()
    mixed, targets = step((images, torch.arange(4)), train=True)
    assert targets.shape == (4, 4) and not mixed.eq(evaluated).all()
    assert BatchStep((0.5,) * 3, (0.5,) * 3, 4)((images, torch.arange(4)), True)[1].ndim == 1


def test_batch_step_erases_training_batches_only_after_normalising():
    images = torch.full((8, 3, 16, 16), 255, dtype=torch.uint8)
    step = BatchStep((0.5,) * 3, (0.5,) * 3, num_classes=8, erase=RandomErasing(1.0, "const"))
    evaluated, _ = step((images, torch.arange(8)), train=False)
    assert evaluated.eq(1).all()
    trained, labels = step((images, torch.arange(8)), train=True)
    # const erasing fills with 0 in the normalised space: the mean colour
    assert trained.eq(0).flatten(1).any(dim=1).all() and labels.ndim == 1
    assert set(trained.unique().tolist()) == {0.0, 1.0}


def test_collate_drops_skipped_samples():
    samples = [(torch.full((1, 8, 8), k), k) for k in range(2)]
    images, labels = collate_present([*samples, None])
    assert images.shape == (2, 1, 8, 8) and labels.tolist() == [0, 1]


def test_normalize_is_torchvisions_to_dtype_and_normalize_bit_for_bit():
    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    reference = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(pixels))
    assert torch.equal(Normalize(mean, std)(pixels), reference)
    floats = pixels / 255
    assert torch.equal(Normalize(mean, std)(floats), v2.Normalize(mean, std)(floats))
    assert floats.equal(pixels / 255)  # a float batch is not changed in place


def test_batch_resized_crop_of_the_whole_image_is_the_image_or_its_mirror():
    images = torch.randn(4, 2, 12, 12)
    whole = BatchResizedCrop(12, scale=(1, 1), ratio=(1, 1), hflip=0.0)(images)
    torch.testing.assert_close(whole, images, atol=1e-5, rtol=0)
    mirrored = BatchResizedCrop(12, scale=(1, 1), ratio=(1, 1), hflip=1.0)(images)
    torch.testing.assert_close(mirrored, images.flip(-1), atol=1e-5, rtol=0)


def test_batch_resized_crop_takes_a_box_of_the_drawn_area_inside_each_image():
    # each pixel holds its column: a crop of a quarter of the area (half the side) resized to
    # the full side steps half a column per pixel (its outermost pixels may touch the image's
    # edge, which bilinear resizing clamps), and stays within the image's columns
    columns = torch.arange(16.0).expand(8, 1, 16, 16)
    cropped = BatchResizedCrop(16, scale=(0.25, 0.25), ratio=(1, 1), hflip=0.0)(columns)
    steps = (cropped[..., 1:] - cropped[..., :-1])[..., 1:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, 0.5))
    assert cropped.min() >= 0 and cropped.max() <= 15
    assert len({round(row[0].item(), 3) for row in cropped[:, 0, 0]}) > 1  # boxes differ
