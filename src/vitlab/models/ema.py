"""An exponential moving average of a model's weights, kept beside the model (timm's model EMA,
which DeiT keeps and saves next to the model it evaluates; DINO's and iBOT's teacher)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    """``decay * average + (1 - decay) * current`` at each ``update``: for every tensor of
    ``model``'s state dict with ``average_buffers`` (timm's ``ModelEmaV2``; DeiT's main.py keeps
    timm's ``ModelEma``, the same update, after every optimizer step), or for its parameters only
    (DINO's and iBOT's teacher update: the average's buffers, e.g. BatchNorm statistics, are
    those of its own forward passes).

    The average starts as a copy of ``model``, in its mode; it has no gradients, so nothing
    trains it. As a child of the module that trains ``model``, it switches to eval mode with it
    for evaluation (a module kept in eval mode while its parent trains is what Lightning warns
    about at the start of every fit).
    """

    def __init__(self, model: nn.Module, decay: float, average_buffers: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.average_buffers = average_buffers
        self.module = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self.average_buffers:
            averages, currents = self.module.state_dict().values(), model.state_dict().values()
        else:
            averages, currents = self.module.parameters(), model.parameters()
        for average, current in zip(averages, currents, strict=True):
            average.copy_(self.decay * average + (1.0 - self.decay) * current)

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Restart the average at ``model``'s weights (e.g. once pretrained ones are loaded)."""
        self.module.load_state_dict(model.state_dict())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)
