"""The CNN baselines: sizes and outputs at small and ImageNet sizes, torchvision's ResNet-18 at the
standard stem, a digits run through the real entry point, and the Fashion-MNIST pair matched in
parameters and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitlab.models.cnn import BasicResNet
from vitlab.run import train

# torchvision's ResNet-18 (11,689,512 with its 7x7 RGB stem and 1000 classes) with the small
# stem on 1 channel and 10 classes: - 7*7*3*64 + 3*3*1*64 - (512*1000 + 1000) + (512*10 + 10)
RESNET18_SMALL_GRAY_10 = 11_689_512 - 9_408 + 576 - 513_000 + 5_130


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, size: int) -> int:
    """FLOPs of one image's forward (a multiply-add counts 2)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 1, size, size))
    return counter.get_total_flops()


def test_resnet18_small_counts_its_parameters_and_classifies_28_and_224_pixel_images(
    compose_config,
):
    model = instantiate(compose_config("model=resnet18_small").model)
    assert isinstance(model, BasicResNet)
    assert parameters(model) == RESNET18_SMALL_GRAY_10 == 11_172_810
    with torch.no_grad():
        for size in (28, 224):
            assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
            assert model.pre_logits(torch.randn(1, 1, size, size)).shape == (1, 512)
    # the small stem keeps the resolution: 28 px reach the last stage at 4x4 (32x smaller: 1x1)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 512, 4, 4)


def test_the_standard_stem_gives_torchvisions_resnet18_logits_for_its_weights():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    with torch.no_grad():  # BatchNorm statistics and affines that are not the identity
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_()
    model = BasicResNet(img_size=224).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    assert parameters(model) == 11_689_512
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=1e-5, atol=1e-5)


def test_a_resnet_trains_a_digits_epoch_with_the_classification_task(compose_config):
    """Through train.py's ``train(cfg)``: checks, FLOPs, fit, k-NN-ready features, test."""
    cfg = compose_config(
        "experiment=none",
        "task=classification",
        "model=resnet_fmnist",  # resnet18_small at a quarter width: CPU-cheap
        "model.img_size=8",
        "data=digits",
        "trainer.max_epochs=1",
        "logger=csv",
    )
    torch.manual_seed(0)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    assert metrics["val/acc1"] > 0.1  # better than chance after one epoch
    assert 0 <= metrics["test/acc1"] <= 1


def test_the_fashion_mnist_cnn_matches_the_small_vits_parameters_and_flops(compose_config):
    vit = instantiate(compose_config("model=vit_fmnist").model)
    cnn = instantiate(compose_config("model=resnet_fmnist").model)
    sizes = {
        name: (parameters(model), forward_flops(model, 28))
        for name, model in (("vit_fmnist", vit), ("resnet_fmnist", cnn))
    }
    for name, (count, flops) in sizes.items():
        print(f"{name}: {count / 1e6:.3f}M parameters, {flops / 1e6:.1f} MFLOPs per 28x28 image")
    (vit_params, vit_flops), (cnn_params, cnn_flops) = sizes.values()
    assert cnn_params == pytest.approx(vit_params, rel=0.10)
    assert cnn_flops == pytest.approx(vit_flops, rel=0.25)
    assert vit(torch.randn(2, 1, 28, 28)).shape == cnn(torch.randn(2, 1, 28, 28)).shape == (2, 10)
