"""SegmentationTask: a short real fit on generated digit canvases beats predicting background."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from vitlab.data.digit_canvas import write_digit_canvas
from vitlab.data.segmentation import SegmentationDataModule
from vitlab.tasks.segmentation import SegmentationTask, segmentation_metrics


@pytest.fixture
def canvas_task(vit_config, optimizer_config) -> Callable[..., SegmentationTask]:
    """``canvas_task(lr=6e-2)``: a ViTSegmenter of 32x32 canvases, 11 mask classes."""

    def build(lr: float = 6e-2) -> SegmentationTask:
        backbone = vit_config(img_size=32, patch_size=4, num_classes=11, embed_dim=64)
        model = {
            "_target_": "vitlab.models.segmenter.ViTSegmenter",
            "backbone": backbone,
            "num_classes": 11,
        }
        optimizer = optimizer_config(lr=lr, weight_decay=0.05)
        return SegmentationTask(model, optimizer, warmup_epochs=1)

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
