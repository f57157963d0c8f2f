import pytest
import torch

from vitlab.data.digits import DigitsDataModule


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


def test_batches_are_standardised_images(digits):
    images, labels = next(iter(digits.test_dataloader()))
    assert images.shape == (16, 1, 8, 8) and labels.shape == (16,)
    standardise = digits.splits["val"].transform  # the train transform also augments
    all_train = torch.stack([standardise(x) for x in digits.splits["train"].images])
    assert all_train.mean().abs() < 1e-4 and (all_train.std() - 1).abs() < 1e-3


def test_training_batches_are_augmented_and_full(digits):
    loader = digits.train_dataloader()
    assert loader.drop_last
    image = digits.splits["train"].images[0]
    first, second = digits.splits["train"].transform(image), digits.splits["train"].transform(image)
    assert not torch.equal(first, second)


def test_upsampling_for_larger_models():
    datamodule = DigitsDataModule(img_size=32, batch_size=4)
    datamodule.setup()
    images, _ = next(iter(datamodule.val_dataloader()))
    assert images.shape == (4, 1, 32, 32)


def test_wrong_class_count_is_refused():
    with pytest.raises(ValueError, match="10 classes"):
        DigitsDataModule(num_classes=5)
