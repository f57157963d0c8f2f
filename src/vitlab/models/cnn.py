"""ResNets (He et al., 2016) from torchvision's building blocks: the CNN baselines a ViT is
compared with under the same task and recipe (``task=classification model=resnet18_small``).

``BasicResNet`` stacks torchvision's ``BasicBlock`` stages (``ResNet._make_layer``) behind one of
two stems: ``standard`` is torchvision's (7x7 stride-2 convolution, then a 3x3 stride-2 max-pool),
``small`` the one used for 32x32 and smaller images (one 3x3 stride-1 convolution, no max-pool,
as in the CIFAR ResNets of the literature), which keeps the small image's resolution in the first
stage. ``width`` sets the first stage's channels; every later stage doubles them, as torchvision's
do (64: ResNet-18's 64-128-256-512). The network takes any image size and channel count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, conv3x3


class BasicResNet(ResNet):
    """A classifier of ``BasicBlock`` stages (``layers`` blocks each, the 2nd to 4th at stride
    2), global average pooling and a linear ``fc``, with torchvision's names and initialisation.

    The defaults are torchvision's ResNet-18; with ``stem="standard"`` and 3 channels its state
    dict and logits are ``torchvision.models.resnet18``'s. ``img_size`` is the size the data
    prepares images at (``data.img_size`` reads ``model.img_size``); the network itself takes
    any size.
    """

    def __init__(
        self,
        img_size: int,
        in_chans: int = 3,
        num_classes: int = 1000,
        layers: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        stem: Literal["standard", "small"] = "standard",
    ):
        # not ResNet.__init__, whose stage widths are fixed at 64-512; its _make_layer reads these
        nn.Module.__init__(self)
        if stem not in ("standard", "small"):
            raise ValueError(f"stem must be 'standard' or 'small', got {stem!r}")
        if len(layers) != 4:
            raise ValueError(f"layers: blocks of the 4 stages, got {list(layers)}")
        self.img_size = img_size
        self.num_classes = num_classes
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        if stem == "small":
            self.conv1 = conv3x3(in_chans, width)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        self.apply(init_conv_and_norm)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, (B, 8 * width, H / s, W / s)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pre_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled features ``fc`` reads, (B, 8 * width): what k-NN and probes classify."""
        return torch.flatten(self.avgpool(self.forward_features(images)), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(images))


def init_conv_and_norm(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal convolutions (fan out, ReLU), unit
    BatchNorms; the ``fc`` keeps torch's default."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
