"""The attention-maps callback: panels of the right maps, PNGs from a real Trainer on digits."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from PIL import Image

from vitlab.callbacks.attention import AttentionMaps, attention_panels
from vitlab.data.digits import DigitsDataModule
from vitlab.models.attention import attention_rollout
from vitlab.tasks.classification import ClassificationTask


def test_panels_hold_the_image_then_rollout_then_each_head_upsampled_per_patch(tiny_vit):
    model = tiny_vit(num_heads=2).eval()
    images = torch.randn(3, 1, 8, 8)
    panels = attention_panels(model, images).view(3, 4, 1, 8, 8)
    assert torch.equal(panels[:, 0], images)
    maps = model.attention_maps(images)
    rollout_cls = attention_rollout(maps)[:, 0, 1:].view(3, 4, 4)
    torch.testing.assert_close(panels[:, 1, 0, ::2, ::2], rollout_cls)
    torch.testing.assert_close(panels[:, 1, 0, 1::2, 1::2], rollout_cls)
    head1_cls = maps[-1][:, 1, 0, 1:].view(3, 4, 4)
    torch.testing.assert_close(panels[:, 3, 0, ::2, ::2], head1_cls)


def test_callback_writes_a_png_per_validation_epoch_with_a_row_per_image(
    tmp_path: Path, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[AttentionMaps(num_images=4)],
    )
    task = ClassificationTask(
        vit_config(num_heads=2), optimizer_config(), **task_recipe("classification")
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=8))
    pngs = sorted((tmp_path / "attention").iterdir())
    assert [p.name for p in pngs] == ["epoch_000.png", "epoch_001.png"]
    with Image.open(pngs[0]) as image:
        # make_grid: 2-pixel padding around 8x8 tiles; 4 tiles a row (image, rollout, 2 heads)
        assert image.size == (4 * 10 + 2, 4 * 10 + 2)


def test_config_instantiates_the_callback_next_to_the_default_ones(compose_config):
    cfg = compose_config("callbacks=[default,attention_maps]")
    assert {"model_checkpoint", "attention_maps"} <= cfg.callbacks.keys()
    callback = instantiate(cfg.callbacks.attention_maps)
    assert isinstance(callback, AttentionMaps) and callback.block == -1
