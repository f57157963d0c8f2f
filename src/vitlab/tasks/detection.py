"""Object detection: a torchvision detection model (``ViTDetFCOS``) trained on its own losses and
scored by COCO mAP (torchmetrics' ``MeanAveragePrecision``, pycocotools backend)."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from vitlab.models.detector import ViTDetFCOS
from vitlab.tasks.base import Config, RecipeTask

Targets = list[dict[str, torch.Tensor]]
Batch = tuple[torch.Tensor, Targets]
# what the task logs of MeanAveragePrecision's results: mAP@[.5:.95], @.5, @.75
LOGGED = ("map", "map_50", "map_75")


def detection_metric() -> MeanAveragePrecision:
    # built on the CPU even where the task is (its meta-device copy for FLOPs): the metric
    # makes real tensors as it starts
    with torch.device("cpu"):
        return MeanAveragePrecision(iou_type="bbox", backend="pycocotools")


class DetectionTask(RecipeTask):
    """The sum of the detector's losses (FCOS: focal classification, GIoU box regression,
    centerness); ``{stage}/map``, ``map_50`` and ``map_75`` over each evaluation epoch.

    ``model`` is the config of a ``ViTDetFCOS``; ``pretrained`` weights (``RecipeTask``) load into
    its ViT, and ``layer_decay`` decays the ViT's
    lr by depth (the pyramid and head get the full lr), as ViTDet fine-tunes.
    """

    prediction = "boxes"

    def __init__(
        self,
        model: Config,
        optimizer: Config,
        **recipe: Any,
    ):
        super().__init__(optimizer, **recipe)
        self.model: ViTDetFCOS = instantiate(model, _convert_="all")
        self.metrics = nn.ModuleDict({"val": detection_metric(), "test": detection_metric()})

    def pretrained_target(self) -> nn.Module:
        return self.model.vit

    def trained_module(self) -> nn.Module:
        return self.model

    def val_metric_names(self) -> list[str]:
        return [f"val/{name}" for name in LOGGED]

    def flops_forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        # the detector's losses need targets and its post-processing is not differentiable:
        # the FLOPs counted are the backbone and pyramid's, the bulk of a step
        return sum(level.sum() for level in model.backbone(images).values())

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections of each image: ``boxes`` (xyxy, pixels), ``scores``, ``labels``."""
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.log_step("train/loss", loss, prog_bar=True)
        for name, value in losses.items():
            self.log_step(f"train/{name}", value)
        return self.finite_or_stop(loss, batch_idx)

    def _evaluate(self, batch: Batch, stage: str) -> None:
        images, targets = batch
        self.metrics[stage].update(self.model(images), targets)

    def _log_epoch(self, stage: str) -> None:
        results = self.metrics[stage].compute()
        self.log_dict({f"{stage}/{name}": results[name] for name in LOGGED}, prog_bar=True)
        self.metrics[stage].reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
