"""MAE pretraining, with an optional online linear probe that tracks the encoder's features."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.tasks.base import RecipeTask
from vitlab.tasks.classification import accuracy_metrics
from vitlab.tasks.linear_probe import probe_head


class MAEPretrainTask(RecipeTask):
    """Pixel reconstruction of masked patches (AdamW, betas 0.9/0.95, in the MAE recipe).

    With ``probe_num_classes`` set, a ``probe_head`` learns to classify the detached class
    token of the same masked forward pass (no extra encoder pass, no gradient into the
    encoder) and reports ``val/probe_acc1``: a cheap running signal of representation quality.
    """

    def __init__(
        self,
        model: MaskedAutoencoderViT,
        optimizer: Callable[..., Optimizer],
        warmup_epochs: float = 40.0,
        min_lr: float = 0.0,
        probe_num_classes: int | None = None,
        skip_nonfinite: bool = False,
    ):
        super().__init__(optimizer, warmup_epochs, min_lr, skip_nonfinite=skip_nonfinite)
        self.model = model
        self.probe = probe_head(model.embed_dim, probe_num_classes) if probe_num_classes else None
        if self.probe is not None:
            self.val_probe_metrics = accuracy_metrics(probe_num_classes, "val/probe_")
            self.test_probe_metrics = accuracy_metrics(probe_num_classes, "test/probe_")

    def trained_module(self) -> nn.Module:
        """The task itself: the autoencoder and, when present, the probe (``probe.*``)."""
        return self

    def no_weight_decay(self) -> set[str]:
        return {f"model.{name}" for name in self.model.no_weight_decay()}

    def _losses(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Reconstruction loss, probe logits (None without a probe) and the targets."""
        images, targets = batch
        latent, mask, ids_restore = self.model.forward_encoder(images, self.model.mask_ratio)
        pred = self.model.forward_decoder(latent, ids_restore)
        loss = self.model.forward_loss(images, pred, mask)
        probe_logits = self.probe(latent[:, 0].detach()) if self.probe is not None else None
        return loss, probe_logits, targets

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        loss, probe_logits, targets = self._losses(batch)
        self.log_step("train/loss", loss, prog_bar=True)
        if probe_logits is None:
            return self.finite_or_stop(loss, batch_idx)
        probe_loss = F.cross_entropy(probe_logits, targets)
        self.log_step("train/probe_loss", probe_loss)
        return self.finite_or_stop(loss + probe_loss, batch_idx)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        loss, probe_logits, targets = self._losses(batch)
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
        if probe_logits is not None:
            metrics = self.val_probe_metrics if stage == "val" else self.test_probe_metrics
            metrics(probe_logits, targets)
            self.log_dict(metrics, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")
