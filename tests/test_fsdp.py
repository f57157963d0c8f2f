"""trainer=fsdp: Lightning's FSDPStrategy with each ViT block as a wrap unit and full state dict
checkpoints. FSDP needs GPUs, so here its config composes and its strategy is instantiated, and
the wrap policy is applied to the task's model built on the meta device."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy

from vitlab.models.vit import Block
from vitlab.tasks.base import build_task


@pytest.mark.parametrize("task", ["classification", "mae_pretrain"])
def test_fsdp_wraps_every_vit_block_and_saves_full_state_dicts(task, compose_config):
    cfg = compose_config(
        "experiment=none", "trainer=fsdp", f"task={task}", "model=vit_l", "data=imagenet"
    )
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy._state_dict_type == "full"  # one file, the plain model's keys
    assert cfg.trainer.accelerator == "gpu"
    with torch.device("meta"):
        model = build_task(cfg.task).model
    policy = strategy.kwargs["auto_wrap_policy"]
    units = [m for m in policy._run_policy(model, set(), {}) if m is not model]
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    assert units == blocks
    assert len(blocks) == (24 + 8 if task == "mae_pretrain" else 24)  # ViT-L (+ MAE decoder)
