"""MAE pretraining, with an optional online linear probe that tracks the encoder's features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.models.probe import ProbeHead
from vitlab.tasks.base import Config, RecipeTask
from vitlab.tasks.classification import accuracy_metrics

Batch = tuple[torch.Tensor, torch.Tensor]


class MAEPretrainTask(RecipeTask):
    """Pixel reconstruction of masked patches (AdamW, betas 0.9/0.95, in the MAE recipe).

    ``model`` is the config of a ``MaskedAutoencoderViT``. With ``probe_num_classes`` set, a
    ``ProbeHead`` learns to classify the detached class token of the same masked forward pass
    (no extra encoder pass, no gradient into the encoder) and reports ``val/probe_acc1``: a
    cheap running signal of representation quality.

    Validation and test masks are drawn from a generator seeded by the batch index (and rank), so
    ``val/loss`` and ``test/loss`` are a function of the weights: eval.py reproduces them.
    """

    def __init__(
        self,
        model: Config,
        optimizer: Config,
        probe_num_classes: int | None,
        **recipe: Any,
    ):
        super().__init__(optimizer, **recipe)
        self.model: MaskedAutoencoderViT = instantiate(model, _convert_="all")
        self.probe = (
            ProbeHead(self.model.embed_dim, probe_num_classes) if probe_num_classes else None
        )
        if self.probe is not None:
            self.val_probe_metrics = accuracy_metrics(probe_num_classes, "val/probe_")
            self.test_probe_metrics = accuracy_metrics(probe_num_classes, "test/probe_")

    def trained_module(self) -> nn.Module:
        """The task itself: the autoencoder and, when present, the probe (``probe.*``)."""
        return self

    def val_metric_names(self) -> list[str]:
        probe = list(self.val_probe_metrics.keys()) if self.probe is not None else []
        return ["val/loss", *probe]

    def no_weight_decay(self) -> set[str]:
        return {f"model.{name}" for name in self.model.no_weight_decay()}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predicted patches, mask) of the autoencoder on ``images``."""
        return self.model(images)

    def flops_forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(images)[0]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's class token over every patch, no masking (k-NN: callbacks/knn)."""
        model = self.model
        return model.norm(model.blocks(model.prepare_tokens(images)))[:, 0]

    def _losses(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Reconstruction loss, probe logits (None without a probe) and the targets."""
        images, targets = batch
        latent, mask, ids_restore = self.model.forward_encoder(
            images, self.model.mask_ratio, generator
        )
        pred = self.model.forward_decoder(latent, ids_restore)
        loss = self.model.forward_loss(images, pred, mask)
        probe_logits = self.probe(latent[:, 0].detach()) if self.probe is not None else None
        return loss, probe_logits, targets

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        loss, probe_logits, targets = self._losses(batch)
        self.log_step("train/loss", loss, prog_bar=True)
        if probe_logits is None:
            return self.finite_or_stop(loss, batch_idx)
        probe_loss = F.cross_entropy(probe_logits, targets)
        self.log_step("train/probe_loss", probe_loss)
        return self.finite_or_stop(loss + probe_loss, batch_idx)

    def eval_masks(self, images: torch.Tensor, batch_idx: int) -> torch.Generator:
        """The generator of a validation or test batch's masks: seeded by its index and rank."""
        seed = batch_idx + 1_000_003 * self.global_rank
        return torch.Generator(device=images.device).manual_seed(seed)

    def _evaluate(self, batch: Batch, batch_idx: int, stage: str) -> None:
        loss, probe_logits, targets = self._losses(batch, self.eval_masks(batch[0], batch_idx))
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
        if probe_logits is not None:
            metrics = self.val_probe_metrics if stage == "val" else self.test_probe_metrics
            metrics(probe_logits, targets)
            self.log_dict(metrics, prog_bar=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")
