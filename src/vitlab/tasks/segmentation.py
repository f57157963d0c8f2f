"""Semantic segmentation: per-pixel cross-entropy on a ``ViTSegmenter``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vitlab.data.segmentation import IGNORE_INDEX
from vitlab.models.segmenter import ViTSegmenter
from vitlab.tasks.base import Config, RecipeTask

Batch = tuple[torch.Tensor, torch.Tensor]


def segmentation_metrics(
    num_classes: int, prefix: str, ignore_index: int = IGNORE_INDEX
) -> MetricCollection:
    """``miou``: IoU averaged over the classes (background included), so a model that only
    finds the dominant class scores about 1 / num_classes; ``pixel_acc``: correct pixels.
    Pixels labelled ``ignore_index`` count for neither."""
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index),
            "pixel_acc": MulticlassAccuracy(
                num_classes, average="micro", ignore_index=ignore_index
            ),
        },
        prefix=prefix,
    )


class SegmentationTask(RecipeTask):
    """Per-pixel cross-entropy against integer masks (B, H, W); mIoU and pixel accuracy. Mask
    pixels equal to ``ignore_index`` (the data's, e.g. ADE20K's unlabelled "other") count for
    neither the loss nor the metrics.

    ``model`` is the config of a ``ViTSegmenter``; ``pretrained`` weights (``RecipeTask``) load into
    its ``backbone``, and the decoder keeps its initialisation. ``layer_decay`` decays the backbone's lr by depth; the decoder gets the full lr.
    """

    prediction = "masks"

    def __init__(
        self,
        model: Config,
        optimizer: Config,
        ignore_index: int,
        **recipe: Any,
    ):
        super().__init__(optimizer, **recipe)
        self.model: ViTSegmenter = instantiate(model, _convert_="all")
        self.ignore_index = ignore_index
        self.val_metrics = segmentation_metrics(self.model.num_classes, "val/", ignore_index)
        self.test_metrics = segmentation_metrics(self.model.num_classes, "test/", ignore_index)

    def pretrained_target(self) -> nn.Module:
        return self.model.backbone

    def trained_module(self) -> nn.Module:
        return self.model

    def val_metric_names(self) -> list[str]:
        return ["val/loss", *self.val_metrics.keys()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, masks, ignore_index=self.ignore_index)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        images, masks = batch
        loss = self.loss(self(images), masks)
        self.log_step("train/loss", loss, prog_bar=True)
        return self.finite_or_stop(loss, batch_idx)

    def _evaluate(self, batch: Batch, stage: str) -> None:
        images, masks = batch
        logits = self(images)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        # update only: Lightning computes the metrics over the whole epoch
        metrics.update(logits, masks)
        self.log(f"{stage}/loss", self.loss(logits, masks), prog_bar=True, sync_dist=True)
        self.log_dict(metrics, prog_bar=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")
