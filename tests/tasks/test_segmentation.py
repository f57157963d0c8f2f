"""SegmentationTask: a short real fit on generated digit canvases beats predicting background."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vitlab.data.digit_canvas import write_digit_canvas
from vitlab.data.segmentation import IGNORE_INDEX, SegmentationDataModule
from vitlab.tasks.segmentation import SegmentationTask, segmentation_metrics


@pytest.fixture
def canvas_task(vit_config, optimizer_config, task_recipe) -> Callable[..., SegmentationTask]:
    """``canvas_task(lr=6e-2)``: a ViTSegmenter of 32x32 canvases, 11 mask classes."""

    def build(lr: float = 6e-2) -> SegmentationTask:
        backbone = vit_config(img_size=32, patch_size=4, num_classes=11, embed_dim=64)
        model = {
            "_target_": "vitlab.models.segmenter.ViTSegmenter",
            "backbone": backbone,
            "num_classes": 11,
        }
        optimizer = optimizer_config(lr=lr, weight_decay=0.05)
        recipe = task_recipe("segmentation", warmup_epochs=1, min_lr=0.0)
        return SegmentationTask(model, optimizer, **recipe)

    return build


def background_miou(masks: torch.Tensor) -> float:
    """The trivial score: every pixel called background (class 0)."""
    metric = segmentation_metrics(11, "")["miou"]
    return float(metric(torch.zeros_like(masks), masks))


@pytest.mark.slow
def test_fitting_a_few_canvases_segments_them_well_above_all_background(
    tmp_path: Path, canvas_task, quiet_trainer
):
    root = write_digit_canvas(tmp_path / "canvas", {"train": 64, "val": 16, "test": 16}, seed=0)
    datamodule = SegmentationDataModule(root, img_size=32, num_classes=11, batch_size=16)
    L.seed_everything(0)
    task = canvas_task()
    trainer = quiet_trainer(
        max_epochs=100,
        gradient_clip_val=1.0,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=datamodule)

    train_set = DataLoader(datamodule.splits["train"], batch_size=64)
    (scores,) = trainer.test(task, dataloaders=train_set, verbose=False)
    masks = next(iter(train_set))[1]
    baseline = background_miou(masks)
    # background is ~90% of the pixels: all-background scores ~0.08 mIoU, pixel accuracy ~0.9
    assert baseline == pytest.approx(0.082, abs=0.01)
    assert scores["test/miou"] > 0.3
    assert scores["test/pixel_acc"] > 0.95


def test_a_nonfinite_loss_stops_with_the_step_named(canvas_task):
    task = canvas_task()
    images, masks = torch.full((2, 1, 32, 32), float("nan")), torch.zeros(2, 32, 32).long()
    with pytest.raises(FloatingPointError, match="global step 0"):
        task.training_step((images, masks), 0)


def test_ignored_pixels_count_for_neither_the_loss_nor_the_metrics(canvas_task):
    task = canvas_task()
    masks = torch.randint(0, 11, (2, 8, 8))
    masks[:, :4] = IGNORE_INDEX
    logits = F.one_hot(masks.clamp(max=10), 11).permute(0, 3, 1, 2).float() * 20
    # wrong everywhere the label is ignored
    logits[:, :, :4] = logits[:, :, :4].roll(1, dims=1)
    logits.requires_grad_(True)
    loss = task.loss(logits, masks)
    loss.backward()
    assert loss < 1e-3 and logits.grad[:, :, :4].eq(0).all()
    metrics = segmentation_metrics(11, "", IGNORE_INDEX)
    scores = metrics(logits.detach(), masks)
    assert float(scores["pixel_acc"]) == pytest.approx(1.0)
    assert float(scores["miou"]) == pytest.approx(1.0)


class LearningRates(L.Callback):
    """Every group's lr at the start of each training step, by the names in the group."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        (optimizer,) = trainer.optimizers
        self.steps.append(
            {name: group["lr"] for group in optimizer.param_groups for name in group["names"]}
        )


def test_sgd_with_poly_decay_and_a_decoder_lr_multiplier_trains_as_mmsegmentation(
    tmp_path: Path, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    root = write_digit_canvas(tmp_path / "canvas", {"train": 8, "val": 2, "test": 2}, seed=0)
    datamodule = SegmentationDataModule(root, img_size=32, num_classes=11, batch_size=2)
    model = {
        "_target_": "vitlab.models.segmenter.ViTSegmenter",
        "backbone": vit_config(img_size=32, patch_size=4, num_classes=11, embed_dim=64),
        "num_classes": 11,
    }
    # base lr 0.128 at batch 2: peak lr 1e-3, mmsegmentation's PolyLR to eta_min 1e-4
    optimizer = optimizer_config("SGD", lr=0.128, momentum=0.9, weight_decay=0.0)
    recipe = task_recipe(
        "segmentation", warmup_epochs=0, decay="poly", min_lr=1e-4, lr_mult={"decoder.": 10.0}
    )
    task = SegmentationTask(model, optimizer, **recipe)
    lrs = LearningRates()
    quiet_trainer(max_steps=4, limit_val_batches=0, callbacks=[lrs]).fit(task, datamodule)
    assert isinstance(task.optimizers().optimizer, torch.optim.SGD)
    for step, lr in enumerate(lrs.steps):
        poly = (1e-3 - 1e-4) * (1 - step / 4) ** 0.9 + 1e-4
        assert lr["backbone.blocks.0.attn.qkv.weight"] == pytest.approx(poly)
        assert lr["decoder.head.weight"] == pytest.approx(10 * poly)
