"""The weight EMA against timm's ModelEmaV2 (the update DeiT's main.py makes with timm's
ModelEma); nothing trains it."""

from __future__ import annotations

import pytest
import torch
from timm.utils import ModelEmaV2
from torch import nn

from vitlab.models.ema import ModelEma


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    optimizer.step()


def test_each_update_is_timms_model_ema_v2(tiny_vit):
    torch.manual_seed(0)
    model = tiny_vit()
    ours, reference = ModelEma(model, 0.9), ModelEmaV2(model, decay=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        train_step(model, optimizer)
        ours.update(model)
        reference.update(model)
    expected, current = reference.module.state_dict(), model.state_dict()
    for name, tensor in ours.module.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    assert not torch.equal(ours.module.head.weight, current["head.weight"])


def test_nothing_trains_the_average_and_it_evaluates_with_its_parent(tiny_vit):
    model = tiny_vit(drop_path_rate=0.5)
    ema = ModelEma(model, 0.99)
    parent = nn.ModuleDict({"model": model, "ema": ema})
    assert not any(parameter.requires_grad for parameter in ema.parameters())
    assert all(module.training for module in ema.modules())  # no eval-mode warning at fit start
    parent.eval()
    images = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(ema(images), ema(images), rtol=0, atol=0)  # no drop path


def test_set_restarts_the_average_at_the_models_weights(tiny_vit):
    model, other = tiny_vit(), tiny_vit()
    ema = ModelEma(other, 0.5)
    ema.set(model)
    for name, tensor in ema.module.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_a_decay_outside_zero_to_one_is_refused(tiny_vit):
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\), got 1.0"):
        ModelEma(tiny_vit(), 1.0)


@pytest.mark.parametrize("average_buffers", [True, False])
def test_buffers_are_averaged_as_timms_or_left_to_the_average(average_buffers):
    # timm's ModelEmaV2 (DeiT) averages BatchNorm statistics too; DINO's and iBOT's teacher
    # averages the parameters only and keeps the statistics of its own forward passes
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    ours = ModelEma(model, 0.9, average_buffers=average_buffers)
    reference = ModelEmaV2(model, decay=0.9)
    model(torch.randn(16, 4) + 3)  # the model's statistics move
    with torch.no_grad():
        model[0].weight.add_(1.0)
    buffers = {name: tensor.clone() for name, tensor in ours.module.named_buffers()}
    ours.update(model)
    reference.update(model)
    expected = reference.module.state_dict()
    for name, param in ours.module.named_parameters():
        torch.testing.assert_close(param, expected[name], rtol=0, atol=0, msg=name)
    for name, buffer in ours.module.named_buffers():
        torch.testing.assert_close(buffer, expected[name] if average_buffers else buffers[name])
    assert not torch.equal(buffers["1.running_mean"], expected["1.running_mean"])
