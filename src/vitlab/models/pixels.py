"""The raw-pixel baseline: an "encoder" whose features are the image's pixels.

With ``task=linear_probe`` (``python train.py experiment=fmnist_linear_probe model=pixels
task.pretrained=null``) it gives, by the same code that measures a pretrained encoder, the
baselines a learnt representation has to beat: the k-NN monitor's vote over raw pixels and a
linear classifier (logistic regression) on them.
"""

from __future__ import annotations

import torch
from torch import nn


class Pixels(nn.Module):
    """``pre_logits`` is the flattened image (``in_chans * img_size**2`` features); ``head`` a
    linear classifier on it. Nothing else to learn, so nothing for ``task.pretrained`` to load.
    """

    def __init__(self, img_size: int, in_chans: int, num_classes: int):
        super().__init__()
        self.img_size, self.num_classes = img_size, num_classes
        self.embed_dim = in_chans * img_size**2
        self.head = nn.Linear(self.embed_dim, num_classes)

    def pre_logits(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pre_logits(images))
