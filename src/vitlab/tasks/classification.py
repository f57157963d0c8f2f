"""Supervised training and fine-tuning of a ViT classifier."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from vitlab.models.ema import ModelEma
from vitlab.tasks.base import Config, RecipeTask

# the std of a fine-tuned classifier's fresh weights: the MAE release's fine-tuning
# (main_finetune.py: "manually initialize fc layer", trunc_normal_(model.head.weight, std=2e-5))
FINETUNE_HEAD_STD = 2e-5


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 (and top-5 when there are more than five classes) micro accuracy."""
    metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ClassificationTask(RecipeTask):
    """Cross-entropy with label smoothing; targets are class indices or soft (mixed) labels.

    ``model`` is the config of a classifier with ``num_classes`` and ``pre_logits`` (a
    ``VisionTransformer``, or a CNN: ``vitlab.models.cnn``), the target of ``pretrained``
    weights (``RecipeTask``), after which the classifier is initialised for fine-tuning
    (``init_head``). ``compile`` compiles ``model`` in place (checkpoint keys unchanged).

    ``ema_decay`` keeps an exponential moving average of the model's weights beside it
    (``model_ema``, updated after every optimizer step), as DeiT does: the model is what trains,
    is saved as the model (``model.*``), exported and evaluated under ``val/`` and ``test/``;
    the average is saved beside it (``model_ema.*``, so a resumed run continues both) and
    evaluated on the same batches under ``val_ema/`` and ``test_ema/``. ``monitor`` picks the
    best checkpoint by the model's ``val/acc1``, as DeiT's ``best_checkpoint.pth``, unless it
    names an ``val_ema/`` metric.
    """

    prediction = "classes"

    def __init__(
        self,
        model: Config,
        optimizer: Config,
        label_smoothing: float,
        ema_decay: float | None,
        **recipe: Any,
    ):
        super().__init__(optimizer, **recipe)
        self.model = self.build_model(model)
        self.label_smoothing = label_smoothing
        num_classes = self.model.num_classes
        # the mean of per-image top-1 hits without a NaN check (a host sync on GPU): it updates
        # every step, where MulticlassAccuracy's update is bookkeeping a small model notices
        self.train_acc1 = MeanMetric(nan_strategy="disable")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self.model_ema = None if ema_decay is None else ModelEma(self.model, ema_decay)
        if self.model_ema is not None:
            self.val_ema_metrics = accuracy_metrics(num_classes, "val_ema/")
            self.test_ema_metrics = accuracy_metrics(num_classes, "test_ema/")

    def build_model(self, config: Config) -> nn.Module:
        """The classifier that trains, from its config."""
        return instantiate(config, _convert_="all")

    def pretrained_target(self) -> nn.Module:
        return self.model

    def load_pretrained(self) -> None:
        """The encoder's weights, a fresh head, and the EMA restarted at the result."""
        super().load_pretrained()
        self.init_head()
        if self.model_ema is not None:
            self.model_ema.set(self.model)

    def init_head(self) -> None:
        """The classifier on a loaded encoder: truncated-normal weights of std 2e-5 and zero
        biases, as the MAE release sets them after loading; its logits start near zero, so
        fine-tuning starts from a uniform prediction rather than a random one."""
        nn.init.trunc_normal_(self.model.head.weight, std=FINETUNE_HEAD_STD)
        nn.init.zeros_(self.model.head.bias)

    def trained_module(self) -> nn.Module:
        return self.model

    def val_metric_names(self) -> list[str]:
        names = ["val/loss", *self.val_metrics.keys()]
        if self.model_ema is not None:
            names += ["val_ema/loss", *self.val_ema_metrics.keys()]
        return names

    def classifier(self) -> nn.Module:
        """A copy of the trained classifier as a plain model in eval mode: what export and
        predict.py deploy."""
        return copy.deepcopy(self.model).eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features the classifier reads (k-NN: callbacks/knn)."""
        return self.model.pre_logits(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def predict_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes), in float32."""
        return self(images).float().softmax(dim=-1)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        self.log_step("train/loss", loss, prog_bar=True)
        self.track_train_accuracy(logits, targets)
        return self.finite_or_stop(loss, batch_idx)

    def track_train_accuracy(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Counts a batch with class-index targets (unmixed) into the epoch's train top-1."""
        if targets.ndim == 1:
            self.train_acc1.update(logits.argmax(dim=-1) == targets)

    def on_train_epoch_end(self) -> None:
        """Train top-1 of the epoch, logged once (the metric object: Lightning computes it across
        processes and resets it); logging it every step would cost a small model's step more
        than the step itself spends on it."""
        if self.train_acc1.update_count:
            self.log("train/acc1", self.train_acc1)
        else:
            self.train_acc1.reset()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step, then the EMA's update (as DeiT's ``train_one_epoch``)."""
        super().optimizer_step(*args, **kwargs)
        if self.model_ema is not None:
            self.model_ema.update(self.model)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self._log_evaluation(self, images, targets, stage, prog_bar=True)
        if self.model_ema is not None:
            self._log_evaluation(self.model_ema, images, targets, f"{stage}_ema", prog_bar=False)
        return logits

    def _log_evaluation(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        targets: torch.Tensor,
        prefix: str,
        prog_bar: bool,
    ) -> torch.Tensor:
        """Loss (without smoothing) and accuracies of ``model`` (this task, or its EMA) under
        ``prefix``: val, test, val_ema or test_ema; returns its logits."""
        logits = model(images)
        metrics = getattr(self, f"{prefix}_metrics")
        metrics(logits, targets)
        loss = F.cross_entropy(logits, targets)
        self.log(f"{prefix}/loss", loss, prog_bar=prog_bar, sync_dist=True)
        self.log_dict(metrics, prog_bar=prog_bar)
        return logits

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """The model's logits (callbacks read them: ``MisclassifiedImages``)."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")
