"""Multi-crop views: iBOT's RGB augmentation and the digits' crops, as DataModules yield them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitlab.data.digits import DigitsDataModule
from vitlab.data.multicrop import MultiCropConfig, ibot_rgb_views
from vitlab.data.transforms import BatchStep


def test_ibot_views_are_global_crops_then_local_crops_normalised_per_batch():
    config = MultiCropConfig(global_crops=2, local_crops=3, local_size=16)
    image = Image.new("RGB", (50, 40), (200, 30, 90))
    views = ibot_rgb_views(32, config, blur_kernel=5)(image)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.uint8 for v in views)
    batch = [torch.stack([v, v]) for v in views]
    normalised, labels = BatchStep((0.5,) * 3, (0.25,) * 3, 10)((batch, torch.tensor([1, 2])), True)
    assert len(normalised) == 5 and normalised[0].dtype == torch.float32
    torch.testing.assert_close(normalised[4], (batch[4].float() / 255 - 0.5) / 0.25)


def test_digits_yield_view_lists_for_training_and_plain_batches_otherwise():
    data = DigitsDataModule(batch_size=4, multi_crop=dict(local_crops=2, local_size=4))
    data.setup()
    views, labels = next(iter(data.train_dataloader()))
    assert [tuple(v.shape) for v in views] == [(4, 1, 8, 8)] * 2 + [(4, 1, 4, 4)] * 2
    images, _ = next(iter(data.val_dataloader()))
    assert images.shape == (4, 1, 8, 8)


@pytest.mark.parametrize(
    "changes", [dict(global_crops=1), dict(local_crops=-1), dict(global_scale=(0.5, 1.5))]
)
def test_multi_crop_refuses_settings_it_cannot_make(changes):
    with pytest.raises(ValueError, match="multi_crop"):
        MultiCropConfig(**changes)
