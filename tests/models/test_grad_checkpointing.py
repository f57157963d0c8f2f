"""Activation checkpointing per block: the same outputs and gradients (dropout and stochastic
depth included), fewer saved activations, switched from the config or as in timm."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from vitlab.tasks.base import build_task


def gradients(model: torch.nn.Module, images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(seed)
    output = model(images)
    output = output[0] if isinstance(output, tuple) else output
    output.square().mean().backward()
    return [output.detach(), *(p.grad.clone() for p in model.parameters() if p.grad is not None)]


def saved_bytes(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (counted once each)."""
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images).sum()
    return sum(kept.values())


def test_checkpointed_blocks_give_the_same_gradients_and_keep_fewer_activations(tiny_vit):
    model = tiny_vit(depth=3, drop_rate=0.1, drop_path_rate=0.2).train()
    images = torch.randn(4, 1, 8, 8)
    plain = gradients(model, images, seed=1)
    plain_saved = saved_bytes(model, images)
    model.set_grad_checkpointing()
    checkpointed = gradients(model, images, seed=1)
    assert len(checkpointed) == len(plain)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)
    assert saved_bytes(model, images) < plain_saved / 2


@pytest.mark.parametrize("task", ["classification", "mae_pretrain"])
def test_the_model_config_switches_it_for_every_block(task, compose_config):
    config = compose_config("experiment=none", f"task={task}", "model.grad_checkpointing=true").task
    model = build_task(config).model
    stacks = [m for m in model.modules() if hasattr(m, "grad_checkpointing")]
    assert stacks and all(m.grad_checkpointing for m in stacks)
    assert len(stacks) == (2 if task == "mae_pretrain" else 1)  # the MAE's decoder too
