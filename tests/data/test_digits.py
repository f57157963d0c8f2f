"""The digits DataModule: a fixed stratified split in [0, 1], standardised with fixed statistics
by the batch step, light augmentation when asked, and the predict transform that prepares an
image file as evaluation prepares a digit."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitlab.data.digits import DIGITS_MEAN, DIGITS_STD, DigitsDataModule


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule(batch_size=16)
    datamodule.setup()
    return datamodule


def test_split_is_fixed_stratified_and_disjoint(digits):
    sizes = {name: len(split) for name, split in digits.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360
    for split in digits.splits.values():
        counts = torch.bincount(split.labels, minlength=10).float()
        assert counts.min() / counts.max() > 0.85
    train, test = digits.splits["train"].images, digits.splits["test"].images
    assert not (train.flatten(1)[:, None] == test.flatten(1)[None]).all(-1).any()
    again = DigitsDataModule()
    again.setup()
    assert torch.equal(again.splits["test"].labels, digits.splits["test"].labels)


def evaluated(datamodule: DigitsDataModule, images: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 1, H, W) as an evaluation batch leaves the batch step."""
    return datamodule.on_after_batch_transfer((images, torch.zeros(len(images))), 0)[0]


def test_loaders_yield_digits_in_0_1_and_the_batch_step_standardises_them(digits):
    images, labels = next(iter(digits.test_dataloader()))
    assert images.shape == (16, 1, 8, 8) and labels.shape == (16,)
    assert images.min() >= 0 and images.max() <= 1
    resize = digits.splits["val"].transform  # the train transform also augments
    all_train = torch.stack([resize(x) for x in digits.splits["train"].images])
    standardised = evaluated(digits, all_train)
    assert standardised.mean().abs() < 1e-4 and (standardised.std() - 1).abs() < 1e-3


def test_training_batches_are_augmented_and_full(digits):
    loader = digits.train_dataloader()
    assert loader.drop_last
    image = digits.splits["train"].images[0]
    # a small affine of an 8x8 image (nearest neighbours) can leave it as it was: draw a few
    first, *others = (digits.splits["train"].transform(image) for _ in range(8))
    assert any(not torch.equal(first, other) for other in others)


def test_upsampling_for_larger_models():
    datamodule = DigitsDataModule(img_size=32, batch_size=4)
    datamodule.setup()
    images, _ = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 1, 32, 32)


def test_without_augment_training_images_are_prepared_as_evaluation_prepares_them():
    datamodule = DigitsDataModule(batch_size=16, augment=False)
    datamodule.setup()
    train = datamodule.splits["train"]
    image = train.images[0]
    assert torch.equal(train.transform(image), train.transform(image))
    assert torch.equal(train.transform(image), datamodule.eval_transform()(image))


def test_the_standardisation_is_the_fixed_mean_and_std_given():
    assert (DIGITS_MEAN, DIGITS_STD) == ((0.3049,), (0.3758,))
    datamodule = DigitsDataModule(batch_size=16, mean=(0.5,), std=(0.25,))
    datamodule.setup()
    val = datamodule.splits["val"]
    image, _ = val[0]
    torch.testing.assert_close(evaluated(datamodule, image[None])[0], (val.images[0] - 0.5) / 0.25)


def as_file(pixels: torch.Tensor, mode: str) -> Image.Image:
    """A (1, H, W) digit in [0, 1] as an 8-bit image file's contents would be read."""
    gray = Image.fromarray((pixels[0] * 255).round().to(torch.uint8).numpy(), mode="L")
    return gray.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("img_size", [8, 32])
def test_predict_transform_of_a_digit_image_is_the_eval_splits_tensor(mode: str, img_size: int):
    datamodule = DigitsDataModule(img_size=img_size, batch_size=16)
    datamodule.setup()
    val = datamodule.splits["val"]
    prepare = datamodule.predict_transform()
    for index in range(5):
        expected = evaluated(datamodule, val[index][0][None])[0]
        prepared = prepare(as_file(val.images[index], mode))
        assert prepared.shape == expected.shape == (1, img_size, img_size)
        assert prepared.dtype == torch.float32
        # the file holds 8-bit pixels: within one level, in standardised units
        torch.testing.assert_close(prepared, expected, rtol=0, atol=1 / 255 / DIGITS_STD[0])


def test_wrong_class_count_is_refused():
    with pytest.raises(ValueError, match="10 classes"):
        DigitsDataModule(num_classes=5)
