"""SegmentationTask: a short real fit on generated digit canvases beats predicting background; its
loss and metrics skip the pixels of its own ignore label."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate

from vitlab.data.digit_canvas import write_digit_canvas
from vitlab.data.segmentation import SegmentationDataModule
from vitlab.tasks.segmentation import SegmentationTask, segmentation_metrics


@pytest.fixture
def canvas_task(vit_config, optimizer_config, task_recipe) -> Callable[..., SegmentationTask]:
    """``canvas_task(lr=6e-2, **recipe)``: a ViTSegmenter of 32x32 canvases, 11 mask classes."""

    def build(lr: float = 6e-2, **recipe: Any) -> SegmentationTask:
        backbone = vit_config(img_size=32, patch_size=4, num_classes=11, embed_dim=64)
        model = {
            "_target_": "vitlab.models.segmenter.ViTSegmenter",
            "backbone": backbone,
            "num_classes": 11,
        }
        optimizer = optimizer_config(lr=lr, weight_decay=0.05)
        recipe = task_recipe("segmentation", warmup_epochs=1, min_lr=0.0) | recipe
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

    train_set = DataLoader(
        datamodule.splits["train"],
        batch_size=64,
        collate_fn=lambda samples: datamodule.batch_step(default_collate(samples), train=False),
    )
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


def half_ignored(ignore_index: int) -> torch.Tensor:
    """(2, 8, 8) masks of labels other than ``ignore_index`` (of 11 classes), the top half
    ``ignore_index``: 0 as ADE20K's reduce_zero_label leaves "other", or 255."""
    labels = torch.tensor([label for label in range(11) if label != ignore_index])
    masks = labels[torch.randint(0, len(labels), (2, 8, 8))]
    masks[:, :4] = ignore_index
    return masks


@pytest.mark.parametrize("ignore_index", [0, 255])
def test_the_loss_is_the_cross_entropy_of_the_valid_pixels_alone(canvas_task, ignore_index):
    torch.manual_seed(0)
    task = canvas_task(ignore_index=ignore_index)
    masks = half_ignored(ignore_index)
    logits = torch.randn(2, 11, 8, 8) * 3  # imperfect everywhere, ignored pixels included
    valid = masks != ignore_index
    log_probs = logits.log_softmax(dim=1).permute(0, 2, 3, 1)[valid]  # (pixels, classes)
    expected = -log_probs[torch.arange(len(log_probs)), masks[valid]].mean()
    assert task.loss(logits, masks) == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("ignore_index", [0, 255])
def test_the_tasks_ignore_index_reaches_its_metrics(canvas_task, ignore_index):
    torch.manual_seed(0)
    task = canvas_task(ignore_index=ignore_index)
    masks = half_ignored(ignore_index)
    # right on every valid pixel, wrong (class 5) on every ignored one
    predicted = torch.where(masks == ignore_index, 5, masks)
    logits = F.one_hot(predicted, 11).permute(0, 3, 1, 2).float()
    for metrics in (task.val_metrics, task.test_metrics):
        scores = {name.split("/")[-1]: float(v) for name, v in metrics(logits, masks).items()}
        assert scores == {"miou": pytest.approx(1.0), "pixel_acc": pytest.approx(1.0)}


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
