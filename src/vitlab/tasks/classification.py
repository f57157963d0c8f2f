"""Supervised training and fine-tuning of a ViT classifier."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from vitlab.tasks.base import RecipeTask, load_pretrained_weights


def accuracy_metrics(num_classes: int, prefix: str, top5: bool = True) -> MetricCollection:
    """Top-1 (and, with ``top5`` and more than five classes, top-5) micro accuracy."""
    metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if top5 and num_classes > 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ClassificationTask(RecipeTask):
    """Cross-entropy with label smoothing; targets are class indices or soft (mixed) labels.

    ``pretrained`` (a vitlab, MAE or timm checkpoint) is loaded into ``model`` when fitting
    starts, so evaluating or resuming a fine-tuned checkpoint never needs that file.
    ``compile`` compiles ``model`` in place (checkpoint keys unchanged).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., Optimizer],
        warmup_epochs: float = 5.0,
        min_lr: float = 1e-6,
        layer_decay: float | None = None,
        label_smoothing: float = 0.1,
        pretrained: str | None = None,
        compile: bool = False,
        skip_nonfinite: bool = False,
    ):
        super().__init__(optimizer, warmup_epochs, min_lr, layer_decay, compile, skip_nonfinite)
        self.model = model
        self.pretrained = pretrained
        self.label_smoothing = label_smoothing
        num_classes = model.num_classes
        # top-1 only: torchmetrics' top-5 update costs 2.5x the top-1 one, every step
        self.train_metrics = accuracy_metrics(num_classes, "train/", top5=False)
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")

    def setup(self, stage: str) -> None:
        # a resumed run restores its own weights: the pretrained file is not needed again
        if stage == "fit" and self.pretrained is not None and self.trainer.ckpt_path is None:
            load_pretrained_weights(self.model, self.pretrained)

    def trained_module(self) -> nn.Module:
        return self.model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        self.log_step("train/loss", loss, prog_bar=True)
        if targets.ndim == 1:
            self.train_metrics.update(logits, targets)
        return self.finite_or_stop(loss, batch_idx)

    def on_train_epoch_end(self) -> None:
        """Train accuracy of the epoch (batches with class-index targets, i.e. unmixed), logged
        once: logging the metric objects every step costs ~5% of a small model's step."""
        if any(metric.update_count for metric in self.train_metrics.values()):
            self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, targets = batch
        logits = self(images)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics(logits, targets)
        self.log(f"{stage}/loss", F.cross_entropy(logits, targets), prog_bar=True, sync_dist=True)
        self.log_dict(metrics, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")
