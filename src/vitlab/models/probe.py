"""The linear-probe head of the MAE release: BatchNorm without affine parameters, then a Linear."""

from __future__ import annotations

import torch
from torch import nn

PROBE_EPS = 1e-6


class ProbeHead(nn.Sequential):
    """BatchNorm1d(affine=False) then Linear: ``head.0`` and ``head.1`` in a ViT's state dict.

    The normalisation puts features of any scale on an equal footing for the linear layer. In
    eval mode the two are one affine map: ``folded()`` returns it as a plain ``nn.Linear``.
    """

    def __init__(self, embed_dim: int, num_classes: int):
        linear = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        super().__init__(nn.BatchNorm1d(embed_dim, affine=False, eps=PROBE_EPS), linear)

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """The Linear that computes what this head computes in eval mode."""
        norm, linear = self[0], self[1]
        inv_std = (norm.running_var + norm.eps).rsqrt()
        weight = linear.weight * inv_std
        folded = nn.Linear(linear.in_features, linear.out_features)
        folded.weight.copy_(weight)
        folded.bias.copy_(linear.bias - weight @ norm.running_mean)
        return folded
