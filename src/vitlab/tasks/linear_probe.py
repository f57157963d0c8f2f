"""Linear probing: a frozen pretrained encoder and a trained BatchNorm + linear classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitlab.models.probe import ProbeHead
from vitlab.tasks.base import Config
from vitlab.tasks.classification import ClassificationTask


class LinearProbeTask(ClassificationTask):
    """Trains only ``model.head`` (replaced by a ``ProbeHead``) on the frozen encoder's features.

    The encoder, ``fc_norm`` included, stays in eval mode (no dropout, drop path or statistic
    updates) even when Lightning switches the module to training, and runs without autograd.
    Its arguments, metrics, ``pretrained`` loading and evaluation are those of
    ``ClassificationTask``.
    """

    # Lightning's, about the frozen encoder, which is in eval mode on purpose
    expected_warnings = (r"Found \d+ module\(s\) in eval mode at the start of training",)

    def __init__(self, model: Config, optimizer: Config, **recipe: Any):
        super().__init__(model, optimizer, **recipe)
        self.train()  # Lightning keeps the modes modules are built with: freeze them here

    def build_model(self, config: Config) -> nn.Module:
        """The frozen ViT with a ``ProbeHead`` in place of its classifier."""
        model = super().build_model(config).requires_grad_(False)
        model.head = ProbeHead(model.embed_dim, model.num_classes)
        return model

    def init_head(self) -> None:
        """The probe keeps the initialisation ``ProbeHead`` gave it (std 0.01, what the MAE
        release's ``main_linprobe.py`` sets after loading): loading never touches the head."""

    def trained_module(self) -> nn.Module:
        return self.model.head

    def classifier(self) -> nn.Module:
        """A plain ViT: the ``ProbeHead`` (BatchNorm + Linear) folded into the one Linear it
        computes in eval mode."""
        model = super().classifier()
        model.head = self.model.head.folded()
        return model

    def train(self, mode: bool = True) -> LinearProbeTask:
        super().train(mode)
        self.model.eval()
        self.model.head.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.model.pre_logits(images)
        return self.model.head(features)
