"""iBOT's parts: blockwise masks in their ratio range, mask tokens in the student's input, the
patch loss on masked positions only, the class-token loss across views, the centers' update."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vitlab.errors import UserError
from vitlab.models.ibot import (
    IBOTHead,
    IBOTLoss,
    MaskGenerator,
    block_mask,
    encode,
    teacher_temperature,
)
from vitlab.models.pos_embed import POS_EMBEDS


@pytest.mark.parametrize("grid", [(14, 14), (4, 4), (6, 10)])
def test_block_masks_never_pass_their_ratio_and_come_in_blocks(grid):
    rng = random.Random(0)
    patches = grid[0] * grid[1]
    counts = []
    for _ in range(80):
        ratio = rng.uniform(0.1, 0.5)
        mask = block_mask(grid, ratio, rng)
        assert mask.shape == grid and mask.dtype == torch.bool
        assert 0 < mask.sum() <= ratio * patches
        counts.append(mask.sum().item() / (ratio * patches))
    # the loop stops short of the target only when 10 block draws in a row add nothing
    assert sum(counts) / len(counts) > 0.6


def test_the_recipes_masks_leave_half_the_images_unmasked_and_mask_10_to_50_percent():
    masks = MaskGenerator([0.0, 0.3], [0.0, 0.2])(600, (14, 14), random.Random(0))
    fractions = masks.float().mean(dim=1)
    unmasked = (fractions == 0).float().mean()
    assert 0.43 < unmasked < 0.57
    assert fractions.max() <= 0.5
    masked = fractions[fractions > 0]
    assert masked.min() >= 0.05  # a 0.1 target on 196 patches: at least one 4x4 block
    assert MaskGenerator([0.0, 0.3], [0.0, 0.2]).ratio_range() == (0.0, 0.5)


def test_random_masks_mask_exactly_the_drawn_share():
    masks = MaskGenerator([0.4], [0.0], shape="rand")(10, (5, 5), random.Random(0))
    assert (masks.sum(dim=1) == 10).all()


@pytest.mark.parametrize(
    ("ratios", "ratio_vars", "shape"),
    [([0.3], [0.4], "block"), ([0.3, 0.2], [0.1], "block"), ([0.3], [0.0], "grid")],
)
def test_mask_generator_refuses_ratios_outside_0_1_and_unknown_shapes(ratios, ratio_vars, shape):
    with pytest.raises(ValueError):
        MaskGenerator(ratios, ratio_vars, shape)


@pytest.mark.parametrize("pos_embed", POS_EMBEDS)
def test_mask_tokens_replace_the_masked_patches_before_position_embeddings(tiny_vit, pos_embed):
    torch.manual_seed(0)
    vit = tiny_vit(num_classes=0, pos_embed=pos_embed).eval()
    for param in vit.parameters():  # tables and PEG start at zero: make them count
        torch.nn.init.normal_(param, std=0.1)
    token = torch.randn(1, vit.embed_dim)
    images = torch.randn(2, 1, 8, 8)
    everything = torch.ones(2, 16, dtype=torch.bool)
    # every patch masked: the output no longer depends on the image
    masked = encode(vit, images, everything, token)
    torch.testing.assert_close(masked, encode(vit, torch.randn(2, 1, 8, 8), everything, token))
    # nothing masked: the ViT's own forward
    tokens = encode(vit, images, torch.zeros(2, 16, dtype=torch.bool), token)
    torch.testing.assert_close(tokens, vit.forward_features(images))
    torch.testing.assert_close(encode(vit, images), vit.forward_features(images))


def test_encode_takes_local_crops_with_resampled_position_embeddings(tiny_vit):
    vit = tiny_vit(num_classes=0)
    assert encode(vit, torch.randn(3, 1, 4, 4)).shape == (3, 1 + 4, 32)


@pytest.mark.parametrize("pos_embed", ["relative", "conditional", "rope"])
def test_encode_refuses_local_crops_for_grid_bound_position_encodings(tiny_vit, pos_embed):
    vit = tiny_vit(num_classes=0, pos_embed=pos_embed)
    with pytest.raises(UserError, match="model.pos_embed=.*local_crops=0"):
        encode(vit, torch.randn(3, 1, 4, 4))


def test_head_shares_its_prototypes_by_default_and_keeps_their_norm_at_one():
    head = IBOTHead(32, out_dim=50, patch_out_dim=40, hidden_dim=16, bottleneck_dim=8)
    cls, patches = head(torch.randn(2, 5, 32))
    assert cls.shape == (2, 50) and patches.shape == (2, 4, 50)
    norm = head.last_layer.parametrizations.weight.original0
    assert not norm.requires_grad and (norm == 1).all()
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(50))
    separate = IBOTHead(32, 50, 40, 16, 8, norm_last_layer=False, shared=False)
    assert separate(torch.randn(2, 5, 32))[1].shape == (2, 4, 40)
    assert separate.last_layer.parametrizations.weight.original0.requires_grad


def test_patch_loss_ignores_the_unmasked_positions():
    torch.manual_seed(0)
    loss = IBOTLoss(out_dim=10, patch_out_dim=10)
    student, teacher = torch.randn(3, 6, 10), torch.randn(3, 6, 10)
    mask = torch.rand(3, 6) < 0.5
    mask[2] = False  # an unmasked image adds zero
    before = loss.patch_loss([student], [teacher], [mask], temp=0.07)
    changed = student.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 10) * 5
    torch.testing.assert_close(loss.patch_loss([changed], [teacher], [mask], 0.07), before)
    changed[mask] = torch.randn(int(mask.sum()), 10)
    assert not torch.allclose(loss.patch_loss([changed], [teacher], [mask], 0.07), before)
    # the value: per image, the mean over its masked patches; then the mean over images
    target = F.softmax(teacher / 0.07, dim=-1)
    per_patch = -(target * F.log_softmax(student / 0.1, dim=-1)).sum(-1)
    per_image = [
        per_patch[i][mask[i]].mean() if mask[i].any() else torch.tensor(0.0) for i in range(3)
    ]
    torch.testing.assert_close(before, torch.stack(per_image).mean())


def test_class_token_loss_pairs_each_student_view_with_the_other_global_views():
    torch.manual_seed(0)
    loss = IBOTLoss(out_dim=8, patch_out_dim=8)
    loss.center.normal_()
    teacher = [torch.randn(4, 8) for _ in range(2)]
    student = [torch.randn(4, 8) for _ in range(5)]  # 2 global, 3 local
    pairs = [(q, v) for q in range(2) for v in range(5) if q != v]
    assert len(pairs) == 8
    expected = sum(
        -(
            F.softmax((teacher[q] - loss.center) / 0.05, dim=-1)
            * F.log_softmax(student[v] / 0.1, dim=-1)
        )
        .sum(-1)
        .mean()
        for q, v in pairs
    ) / len(pairs)
    torch.testing.assert_close(loss.cls_loss(student, teacher, 0.05), expected)


def test_centers_move_by_momentum_toward_the_batch_mean_of_the_teacher_outputs():
    torch.manual_seed(0)
    loss = IBOTLoss(out_dim=6, patch_out_dim=5)
    old_center, old_patch_center = torch.randn(1, 6), torch.randn(1, 1, 5)
    loss.center.copy_(old_center)
    loss.patch_center.copy_(old_patch_center)
    teacher_cls, teacher_patch = torch.randn(8, 6), torch.randn(8, 3, 5)
    loss.update_center(teacher_cls, teacher_patch)
    torch.testing.assert_close(
        loss.center, 0.9 * old_center + 0.1 * teacher_cls.mean(0, keepdim=True)
    )
    patch_mean = teacher_patch.mean(dim=(0, 1)).view(1, 1, 5)
    torch.testing.assert_close(loss.patch_center, 0.9 * old_patch_center + 0.1 * patch_mean)


def _rank_outputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's local batch of teacher outputs: 4 images, class (4, 6) and patches (4, 3, 5),
    shifted per rank so the ranks' batch means differ."""
    generator = torch.Generator().manual_seed(rank)
    return (
        torch.randn(4, 6, generator=generator) + 3 * rank,
        torch.randn(4, 3, 5, generator=generator) - 2 * rank,
    )


def _update_centers(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loss = IBOTLoss(out_dim=6, patch_out_dim=5)
        loss.update_center(*_rank_outputs(rank))
        torch.save((loss.center, loss.patch_center), f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_centers_are_the_global_batch_mean_on_every_rank(tmp_path: Path):
    # two real processes (gloo): each sees its own 4 images, both end with the center of all 8
    # forked, not spawned: the children need no fresh interpreter importing torch again
    mp.start_processes(
        _update_centers,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    centers = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    outputs = [_rank_outputs(rank) for rank in range(2)]
    global_cls = torch.cat([cls for cls, _ in outputs])
    global_patch = torch.cat([patch for _, patch in outputs])
    expected = 0.1 * global_cls.mean(0, keepdim=True)
    expected_patch = 0.1 * global_patch.mean(dim=(0, 1)).view(1, 1, 5)
    for rank, (center, patch_center) in enumerate(centers):
        torch.testing.assert_close(center, expected)
        torch.testing.assert_close(patch_center, expected_patch)
        local_cls, _ = outputs[rank]
        assert not torch.allclose(center, 0.1 * local_cls.mean(0, keepdim=True), atol=0.05)


def test_teacher_temperature_warms_up_linearly_over_its_epochs_then_stays():
    # np.linspace(0.04, 0.07, 30): 0.04 at epoch 0, 0.07 at epoch 29 and after
    assert teacher_temperature(0, 0.04, 0.07, 30) == 0.04
    assert teacher_temperature(29, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(10, 0.04, 0.07, 30) == pytest.approx(0.04 + 0.03 * 10 / 29)
    assert teacher_temperature(500, 0.04, 0.07, 30) == 0.07
