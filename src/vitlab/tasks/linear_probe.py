"""Linear probing: a frozen pretrained encoder and a trained BatchNorm + linear classifier."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer

from vitlab.models.vit import VisionTransformer
from vitlab.tasks.classification import ClassificationTask

PROBE_EPS = 1e-6


def probe_head(embed_dim: int, num_classes: int) -> nn.Sequential:
    """BatchNorm without affine parameters, then a linear classifier (the MAE release's probe).

    The normalisation puts features of any scale on an equal footing for the linear layer.
    """
    linear = nn.Linear(embed_dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(embed_dim, affine=False, eps=PROBE_EPS), linear)


class LinearProbeTask(ClassificationTask):
    """Trains only ``model.head`` (replaced by ``probe_head``) on the frozen encoder's features.

    The encoder, ``fc_norm`` included, stays in eval mode (no dropout, drop path or statistic
    updates) even when Lightning switches the module to training, and runs without autograd.
    Metrics, ``pretrained`` loading and evaluation are those of ``ClassificationTask``.
    """

    def __init__(
        self,
        model: VisionTransformer,
        optimizer: Callable[..., Optimizer],
        warmup_epochs: float = 10.0,
        min_lr: float = 0.0,
        pretrained: str | None = None,
    ):
        model.requires_grad_(False)
        model.head = probe_head(model.embed_dim, model.num_classes)
        super().__init__(
            model, optimizer, warmup_epochs, min_lr, label_smoothing=0.0, pretrained=pretrained
        )
        self.train()  # Lightning keeps the modes modules are built with: freeze them here

    def trained_module(self) -> nn.Module:
        return self.model.head

    def train(self, mode: bool = True) -> LinearProbeTask:
        super().train(mode)
        self.model.eval()
        self.model.head.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.model.forward_head(self.model.forward_features(images), pre_logits=True)
        return self.model.head(features)
