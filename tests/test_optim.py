import math

import hydra
import pytest
import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from tests.helpers import mae_release
from vitlab.models.segmenter import ViTSegmenter
from vitlab.optim import (
    LARS,
    WarmupCosine,
    WarmupPoly,
    effective_batch_size,
    layer_id,
    param_groups,
    scaled_lr,
)


def test_no_weight_decay_on_biases_norms_and_tokens(tiny_vit):
    model = tiny_vit(depth=3)
    groups = param_groups(model, weight_decay=0.05)
    decay = {name for g in groups if g["weight_decay"] > 0 for name in g["names"]}
    no_decay = {name for g in groups if g["weight_decay"] == 0 for name in g["names"]}
    assert {
        "cls_token",
        "pos_embed",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.bias",
        "head.bias",
    } <= no_decay
    assert {"patch_embed.proj.weight", "blocks.2.mlp.fc1.weight", "head.weight"} <= decay
    assert not decay & no_decay
    assert len(decay | no_decay) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out(tiny_vit):
    model = tiny_vit()
    model.patch_embed.requires_grad_(False)
    names = {name for g in param_groups(model, 0.05) for name in g["names"]}
    assert not any(name.startswith("patch_embed") for name in names)


def test_layer_ids_put_embeddings_at_zero_blocks_in_order_and_head_on_top():
    assert layer_id("pos_embed", 12) == 0
    assert layer_id("patch_embed.proj.weight", 12) == 0
    assert layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert layer_id("blocks.11.mlp.fc2.bias", 12) == 12
    assert layer_id("head.weight", 12) == 13
    assert layer_id("fc_norm.weight", 12) == 13


def test_layer_decay_scales_each_parameter_by_its_depth(tiny_vit):
    groups = param_groups(tiny_vit(depth=3), weight_decay=0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert scale["head.weight"] == 1.0
    assert scale["blocks.2.attn.qkv.weight"] == 0.5
    assert scale["blocks.0.attn.qkv.weight"] == 0.5**3
    assert scale["cls_token"] == scale["patch_embed.proj.weight"] == 0.5**4


def test_effective_batch_and_linear_lr_scaling():
    assert effective_batch_size(64, devices=4, num_nodes=2, accumulate_grad_batches=2) == 1024
    assert scaled_lr(5e-4, 1024) == pytest.approx(2e-3)
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_warmup_cosine_values():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == 0.0
    assert schedule(5) == pytest.approx(0.5)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(110) == pytest.approx(0.1)
    assert schedule(500) == pytest.approx(0.1)
    values = [schedule(step) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_per_step_schedule_is_the_mae_releases_per_iteration_lr():
    """``util/lr_sched.py`` ``adjust_learning_rate`` at the fractional epoch of every iteration:
    7 iterations an epoch, 2 warmup epochs of 10."""
    lr, min_lr, per_epoch = 1.5e-3, 1e-5, 7
    schedule = WarmupCosine(2 * per_epoch, 10 * per_epoch, min_ratio=min_lr / lr)
    for step in range(10 * per_epoch + 1):  # the release never goes past its last epoch
        expected = mae_release.adjust_learning_rate(step / per_epoch, lr, min_lr, 2, 10)
        assert lr * schedule(step) == pytest.approx(expected, rel=1e-12, abs=1e-15), step


def timm_lrs(epochs: int, **scheduler_kwargs) -> list[float]:
    """The lr that timm's ``CosineLRScheduler`` gives each epoch (``step(epoch)`` at its start,
    as timm's train.py steps it) to an optimizer whose lr is 1."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = CosineLRScheduler(optimizer, **scheduler_kwargs)
    lrs = []
    for epoch in range(epochs):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_per_epoch_schedule_is_timms_cosine_scheduler_as_deit_builds_it():
    """DeiT's main.py: ``create_scheduler`` makes a ``CosineLRScheduler`` with t_initial =
    epochs, lr_min = min_lr (1e-5), warmup_t = warmup_epochs (5), warmup_lr_init = warmup_lr
    (1e-6), cycle_decay = decay_rate (0.1) and its defaults otherwise (warmup_prefix False).
    Here at lr 1e-3 over 300 epochs and 10 past them."""
    lr = 1e-3
    deit = dict(t_initial=300, lr_min=1e-5 / lr, warmup_t=5, warmup_lr_init=1e-6 / lr)
    expected = timm_lrs(310, **deit, cycle_decay=0.1)
    schedule = WarmupCosine(5, 300, 1e-5 / lr, 1e-6 / lr, warmup_prefix=False)
    assert [schedule(epoch) for epoch in range(310)] == pytest.approx(expected, rel=1e-12)


def test_a_warmup_prefix_is_timms_warmup_prefix():
    expected = timm_lrs(40, t_initial=30, lr_min=0.1, warmup_t=5, warmup_prefix=True)
    schedule = WarmupCosine(5, 35, min_ratio=0.1, warmup_prefix=True)
    assert [schedule(epoch) for epoch in range(40)] == pytest.approx(expected, rel=1e-12)


def test_schedule_drives_lambda_lr_per_group_scale():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 1.0}, {"params": [model.bias], "lr": 0.5}], lr=1.0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(2, 10))
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.25])
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0] == {
        "warmup_steps": 2,
        "total_steps": 10,
        "min_ratio": 0.0,
        "start_ratio": 0.0,
        "warmup_prefix": True,
        "warmup_endpoint": False,
    }


def test_layer_decay_follows_the_backbone_of_a_segmenter(tiny_vit):
    segmenter = ViTSegmenter(tiny_vit(depth=3), num_classes=4)
    groups = param_groups(segmenter, weight_decay=0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert scale["backbone.blocks.2.attn.qkv.weight"] == 0.5
    assert scale["backbone.patch_embed.proj.weight"] == 0.5**4
    decoder = [name for name in scale if not name.startswith("backbone.")]
    assert decoder and all(scale[name] == 1.0 for name in decoder)
    no_decay = {name for g in groups if g["weight_decay"] == 0 for name in g["names"]}
    assert "backbone.pos_embed" in no_decay


def test_poly_decay_is_mmsegmentations_poly_lr():
    # PolyLR: lr = (base - eta_min) * (1 - step / total) ** power + eta_min, from step 0
    base, eta_min, total = 1e-3, 1e-4, 160
    schedule = WarmupPoly(0, total, min_ratio=eta_min / base, power=0.9)
    for step in (0, 1, 40, 159, 160, 200):
        expected = (base - eta_min) * (1 - min(step, total) / total) ** 0.9 + eta_min
        assert base * schedule(step) == pytest.approx(expected)


def test_lr_mult_scales_the_named_parameters_on_top_of_layer_decay(tiny_vit):
    segmenter = ViTSegmenter(tiny_vit(depth=2), num_classes=3)
    groups = param_groups(segmenter, 0.05, layer_decay=0.5, lr_mult={"decoder.": 10.0})
    scale = {name: group["lr_scale"] for group in groups for name in group["names"]}
    assert scale["decoder.head.weight"] == 10.0 and scale["backbone.norm.weight"] == 1.0
    assert scale["backbone.blocks.1.mlp.fc1.weight"] == 0.5


def lars_release_step(
    weight: torch.Tensor, grad: torch.Tensor, mu: torch.Tensor, lr: float, group: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """One parameter's step of the MAE release's ``util/lars.py`` (MoCo v3's LARS), as a
    formula: a weight matrix's gradient gets ``weight_decay * w`` and is scaled by the trust
    ratio ``trust_coefficient * |w| / |g|`` (1 where either norm is 0); vectors get neither;
    ``mu = momentum * mu + g``, ``w -= lr * mu``. The new weight and ``mu``."""
    if weight.ndim > 1:
        grad = grad + group["weight_decay"] * weight
        weight_norm, grad_norm = weight.norm().item(), grad.norm().item()
        if weight_norm > 0 and grad_norm > 0:
            grad = grad * (group["trust_coefficient"] * weight_norm / grad_norm)
    mu = group["momentum"] * mu + grad
    return weight - lr * mu, mu


def test_a_lars_step_is_the_mae_releases_formula():
    torch.manual_seed(0)
    group = {"weight_decay": 0.05, "momentum": 0.9, "trust_coefficient": 0.001}
    # a weight matrix, a bias, and a matrix at zero (its trust ratio is 1)
    params = [
        nn.Parameter(torch.randn(4, 3)),
        nn.Parameter(torch.randn(4)),
        nn.Parameter(torch.zeros(2, 2)),
    ]
    optimizer = LARS(params, lr=0.0, **group)
    expected = [(param.detach().clone(), torch.zeros_like(param)) for param in params]
    # two steps, the second at another lr (as a schedule sets it), so momentum's place shows
    for lr in (0.5, 0.2):
        grads = [torch.randn_like(param) for param in params]
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad.clone()
        optimizer.param_groups[0]["lr"] = lr
        optimizer.step()
        expected = [
            lars_release_step(weight, grad, mu, lr, group)
            for (weight, mu), grad in zip(expected, grads, strict=True)
        ]
        for param, (weight, _) in zip(params, expected, strict=True):
            torch.testing.assert_close(param.detach(), weight)


def test_a_hand_worked_lars_step_of_a_weight_matrix():
    # |w| = 5; g + 1.0 * w = [[3, 4], [0, 0]], |.| = 5: trust ratio 0.5 * 5 / 5 = 0.5
    weight = nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    weight.grad = torch.tensor([[0.0, 4.0], [0.0, -4.0]])
    LARS([weight], lr=2.0, weight_decay=1.0, momentum=0.9, trust_coefficient=0.5).step()
    # w - lr * 0.5 * [[3, 4], [0, 0]]
    assert weight.detach().tolist() == [[0.0, -4.0], [0.0, 4.0]]


@pytest.mark.parametrize("recipe", ["task=linear_probe", "experiment=mae_linprobe"])
def test_linear_probing_recipes_compose_to_the_releases_lars(compose_config, recipe):
    cfg = compose_config(recipe)
    optimizer = hydra.utils.instantiate(cfg.task.optimizer)([nn.Parameter(torch.zeros(2, 2))])
    assert isinstance(optimizer, LARS)
    settings = {
        key: optimizer.defaults[key] for key in ("momentum", "trust_coefficient", "weight_decay")
    }
    assert settings == {"momentum": 0.9, "trust_coefficient": 0.001, "weight_decay": 0.0}


def test_groups_are_named_as_the_lr_charts_show_them(tiny_vit):
    model = tiny_vit(depth=2)
    plain = [g["name"] for g in param_groups(model, 0.05)]
    assert sorted(plain) == ["decay", "no_decay"]
    layered = {g["name"]: g["lr_scale"] for g in param_groups(model, 0.05, layer_decay=0.5)}
    assert layered["layer_0_no_decay"] == 0.5**3 and layered["layer_3_decay"] == 1.0
    assert {"layer_1_decay", "layer_2_no_decay"} <= layered.keys()
    scaled = [g["name"] for g in param_groups(model, 0.05, lr_mult={"head.": 10})]
    assert sorted(scaled) == ["decay", "decay_x10", "no_decay", "no_decay_x10"]
