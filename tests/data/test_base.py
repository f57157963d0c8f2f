"""What every DataModule shares (``SplitsDataModule``): checked arguments, no file read before
``setup``, the sizes of its splits and the shape of its batches."""

from __future__ import annotations

import pytest

from vitlab.data.digits import DigitsDataModule


@pytest.mark.parametrize("batch_size", [0, 2.5, "8"])
def test_batch_size_must_be_a_whole_number_of_at_least_one(batch_size):
    with pytest.raises(ValueError, match="batch_size: expected a whole number of at least 1"):
        DigitsDataModule(batch_size=batch_size)


def test_mean_and_std_need_one_value_per_channel():
    with pytest.raises(ValueError, match=r"one value per channel \(1\)"):
        DigitsDataModule(mean=(0.5, 0.5), std=(0.25, 0.25))


def test_splits_are_read_by_setup_and_sized_after():
    datamodule = DigitsDataModule(img_size=16, batch_size=8)
    assert datamodule.splits == {} and datamodule.dataset_sizes() == {}
    datamodule.setup()
    assert datamodule.dataset_sizes() == {"train": 1257, "val": 180, "test": 360}


def test_batch_shape_is_what_the_loaders_yield():
    datamodule = DigitsDataModule(img_size=16, batch_size=8)
    datamodule.setup()
    images, _ = next(iter(datamodule.val_dataloader()))
    assert datamodule.batch_shape() == tuple(images.shape) == (8, 1, 16, 16)
