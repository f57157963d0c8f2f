"""iBOT's parts: blockwise masks in their ratio range, mask tokens in the student's input, the
local crops' position table as the release interpolates it, the head (shared BatchNorm), the
patch loss on masked positions only, the class-token loss across views, the centers' update, the
collapse diagnostics; and the architecture: the teacher sees the unmasked views, its EMA
averages the parameters only."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vitlab.errors import UserError
from vitlab.models.ibot import (
    IBOT,
    INTERPOLATE_OFFSET,
    IBOTHead,
    IBOTLoss,
    MaskGenerator,
    block_mask,
    encode,
    feature_cosine,
    mean_target_entropy,
    target_entropy,
    teacher_temperature,
)
from vitlab.models.pos_embed import POS_EMBEDS, resample
from vitlab.models.vit import VisionTransformer

SMALL_HEAD = dict(out_dim=50, patch_out_dim=40, hidden_dim=16, bottleneck_dim=8)


def head(recipe: dict[str, Any], **changes: Any) -> IBOTHead:
    """The recipe's head on 32-wide tokens, smaller (``SMALL_HEAD``) and with ``changes``."""
    return IBOTHead(32, **(recipe["head"] | SMALL_HEAD | changes))


def make_loss(recipe: dict[str, Any], out_dim: int, patch_out_dim: int) -> IBOTLoss:
    """The recipe's loss (student temperature, center momentum, weights) on these outputs."""
    momentum = recipe["center_momentum"]
    return IBOTLoss(
        out_dim,
        patch_out_dim,
        recipe["student_temp"],
        momentum,
        momentum,
        recipe["lambda_cls"],
        recipe["lambda_patch"],
    )


def ibot(vit: VisionTransformer, recipe: dict[str, Any], **changes: Any) -> IBOT:
    """The recipe's architecture around ``vit``, its head ``SMALL_HEAD``-sized."""
    arguments = dict(
        head=recipe["head"] | SMALL_HEAD,
        masking=recipe["masking"],
        patch_objective=recipe["patch_objective"],
        lambda_cls=recipe["lambda_cls"],
        lambda_patch=recipe["lambda_patch"],
        student_temp=recipe["student_temp"],
        center_momentum=recipe["center_momentum"],
    )
    return IBOT(vit, **(arguments | changes))


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


def test_the_recipes_masks_leave_half_the_images_unmasked_and_mask_10_to_50_percent(ibot_recipe):
    masking = MaskGenerator(**ibot_recipe["masking"])
    masks = masking(600, (14, 14), random.Random(0))
    fractions = masks.float().mean(dim=1)
    unmasked = (fractions == 0).float().mean()
    assert 0.43 < unmasked < 0.57
    assert fractions.max() <= 0.5
    masked = fractions[fractions > 0]
    assert masked.min() >= 0.05  # a 0.1 target on 196 patches: at least one 4x4 block
    assert masking.ratio_range() == (0.0, 0.5)


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


def test_the_recipes_head_shares_its_prototypes_and_keeps_their_norm_at_one(ibot_recipe):
    shared = head(ibot_recipe)
    cls, patches = shared(torch.randn(2, 5, 32))
    assert cls.shape == (2, 50) and patches.shape == (2, 4, 50)
    norm = shared.last_layer.parametrizations.weight.original0
    assert not norm.requires_grad and (norm == 1).all()
    torch.testing.assert_close(shared.last_layer.weight.norm(dim=1), torch.ones(50))
    separate = head(ibot_recipe, norm_last_layer=False, shared=False)
    assert separate(torch.randn(2, 5, 32))[1].shape == (2, 4, 40)
    assert separate.last_layer.parametrizations.weight.original0.requires_grad


def test_patch_loss_ignores_the_unmasked_positions(ibot_recipe):
    torch.manual_seed(0)
    loss = make_loss(ibot_recipe, 10, 10)
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


def test_class_token_loss_pairs_each_student_view_with_the_other_global_views(ibot_recipe):
    torch.manual_seed(0)
    loss = make_loss(ibot_recipe, 8, 8)
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


def test_centers_move_by_momentum_toward_the_batch_mean_of_the_teacher_outputs(ibot_recipe):
    torch.manual_seed(0)
    loss = make_loss(ibot_recipe, 6, 5)
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


def _update_centers(
    rank: int, world: int, init_file: str, out_dir: str, recipe: dict[str, Any]
) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loss = make_loss(recipe, 6, 5)
        loss.update_center(*_rank_outputs(rank))
        torch.save((loss.center, loss.patch_center), f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_centers_are_the_global_batch_mean_on_every_rank(tmp_path: Path, ibot_recipe):
    # two real processes (gloo): each sees its own 4 images, both end with the center of all 8
    # forked, not spawned: the children need no fresh interpreter importing torch again
    mp.start_processes(
        _update_centers,
        args=(2, str(tmp_path / "init"), str(tmp_path), ibot_recipe),
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


# --- what the release does: position table, head BatchNorm, local-crop head, teacher EMA ------


def release_interpolate_pos_encoding(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The release's ``VisionTransformer.interpolate_pos_encoding`` (models/vision_transformer.py)
    for a (h, w)-patch crop of a square table, transcribed."""
    num_patches, dim = pos_embed.shape[1] - 1, pos_embed.shape[-1]
    side = int(math.sqrt(num_patches))
    patch_pos_embed = F.interpolate(
        pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=((h + 0.1) / math.sqrt(num_patches), (w + 0.1) / math.sqrt(num_patches)),
        mode="bicubic",
    )
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((pos_embed[:, :1], patch_pos_embed), dim=1)


@pytest.mark.parametrize(("side", "crop"), [(4, (2, 2)), (14, (6, 6)), (14, (5, 7))])
def test_the_position_table_is_interpolated_as_the_releases(side, crop):
    torch.manual_seed(0)
    table = torch.randn(1, 1 + side * side, 24)
    ours = resample(table, crop, 1, offset=INTERPOLATE_OFFSET)
    torch.testing.assert_close(ours, release_interpolate_pos_encoding(table, *crop))
    # a plain resize to the crop's grid samples elsewhere
    assert not torch.allclose(resample(table, crop, 1), ours)


def test_local_crops_encode_with_the_releases_position_table(tiny_vit):
    torch.manual_seed(0)
    vit = tiny_vit(num_classes=0).eval()
    # the same ViT built for 4x4 crops, its table the release's interpolation of the 8x8 one's
    small = tiny_vit(num_classes=0, img_size=4).eval()
    weights = vit.state_dict()
    weights["pos_embed"] = release_interpolate_pos_encoding(vit.pos_embed.detach(), 2, 2)
    small.load_state_dict(weights)
    crops = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(encode(vit, crops), small.forward_features(crops))


def test_the_bn_head_shares_one_batchnorm_between_its_hidden_layers(ibot_recipe):
    torch.manual_seed(0)
    bn_head = head(ibot_recipe, norm="bn").train()
    norms = [m for m in bn_head.mlp if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 2 and norms[0] is norms[1]
    torch.nn.init.normal_(norms[0].weight)
    torch.nn.init.normal_(norms[0].bias)
    tokens = torch.randn(3, 5, 32)
    # the release's DINOHead with norm='bn': Linear, bn, GELU, Linear, the same bn, GELU, Linear
    first, second, last = (m for m in bn_head.mlp if isinstance(m, torch.nn.Linear))
    norm = norms[0]

    def batch_norm(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(0, 1)
        return F.batch_norm(flat, None, None, norm.weight, norm.bias, True).view_as(x)

    hidden = F.gelu(batch_norm(second(F.gelu(batch_norm(first(tokens))))))
    projected = F.normalize(last(hidden), dim=-1)
    cls, patches = bn_head(tokens)
    torch.testing.assert_close(cls, bn_head.last_layer(projected[:, 0]))
    torch.testing.assert_close(patches, bn_head.last_layer(projected[:, 1:]))


@pytest.mark.parametrize("norm", ["bn", None])
def test_the_local_crop_head_is_the_heads_class_output_on_all_tokens(ibot_recipe, norm):
    # the release runs its head on every token of the local crops and keeps the class output:
    # with BatchNorm, the patch tokens are in the statistics
    torch.manual_seed(0)
    local_head = head(ibot_recipe, norm=norm).train()
    tokens = torch.randn(4, 5, 32)
    torch.testing.assert_close(local_head.forward_cls(tokens), local_head(tokens)[0])
    alone = local_head(tokens[:, :1])[0]
    assert torch.allclose(local_head.forward_cls(tokens), alone) == (norm is None)


def test_the_teacher_averages_the_students_parameters_and_keeps_its_own_batchnorm_stats(
    tiny_vit, ibot_recipe
):
    torch.manual_seed(0)
    model = ibot(
        tiny_vit(num_classes=0), ibot_recipe, head=ibot_recipe["head"] | SMALL_HEAD | {"norm": "bn"}
    )
    views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)]
    model(views, 0.04, 0.04)["loss"].backward()
    student = model.student()
    with torch.no_grad():
        for param in student.parameters():
            param.add_(torch.randn_like(param))
    teacher = model.teacher.module
    before = {n: t.clone() for n, t in teacher.state_dict().items()}
    model.update_teacher(0.9)
    parameters = dict(student.named_parameters())
    # the release: param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
    for name, param in teacher.named_parameters():
        torch.testing.assert_close(param, 0.9 * before[name] + 0.1 * parameters[name], msg=name)
    buffers = dict(student.named_buffers())
    for name, buffer in teacher.named_buffers():
        assert torch.equal(buffer, before[name]), name  # its own forward's statistics
    assert not torch.equal(buffers["head.mlp.1.running_mean"], before["head.mlp.1.running_mean"])


# --- the architecture ----------------------------------------------------------------------------


class Inputs:
    """The first input each call of a module got."""

    def __init__(self, module: torch.nn.Module):
        self.seen: list[torch.Tensor] = []
        module.register_forward_hook(lambda _, args, __: self.seen.append(args[0].detach()))


def test_the_teachers_head_sees_the_unmasked_views_and_the_students_the_masked_ones(
    tiny_vit, ibot_recipe
):
    torch.manual_seed(0)
    model = ibot(tiny_vit(num_classes=0, drop_path_rate=0.0), ibot_recipe).eval()
    torch.nn.init.normal_(model.mask_token)
    teacher_head, student_head = Inputs(model.teacher.module.head), Inputs(model.head)
    views = [torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)]
    everything = [torch.ones(3, 16, dtype=torch.bool)] * 2
    model(views, 0.04, 0.04, masks=everything)
    images = torch.cat(views)
    (teacher_tokens,), (student_tokens,) = teacher_head.seen, student_head.seen
    # the teacher starts as the student's copy: only the masks tell their inputs apart
    torch.testing.assert_close(teacher_tokens, encode(model.model, images))
    masked = encode(model.model, images, torch.cat(everything), model.mask_token)
    torch.testing.assert_close(student_tokens, masked)
    assert not torch.allclose(teacher_tokens, student_tokens)


def test_forward_returns_the_losses_and_the_teachers_diagnostics(tiny_vit, ibot_recipe):
    torch.manual_seed(0)
    model = ibot(tiny_vit(num_classes=0), ibot_recipe).eval()
    teacher_head = Inputs(model.teacher.module.head)
    views = [torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.randn(3, 1, 4, 4)]
    out = model(views, 0.05, 0.06)
    (teacher_tokens,) = teacher_head.seen
    teacher_cls, _ = model.teacher.module.head(teacher_tokens)
    targets = F.softmax((teacher_cls - model.loss.center) / 0.05, dim=-1)
    torch.testing.assert_close(out["teacher_entropy"], target_entropy(targets))
    torch.testing.assert_close(out["teacher_mean_entropy"], mean_target_entropy(targets))
    encoded = encode(model.teacher.module.backbone, torch.cat(views[:2]))
    torch.testing.assert_close(out["feature_cosine"], feature_cosine(encoded[:, 0]))
    torch.testing.assert_close(out["loss"], out["cls"] + out["patch"])


# --- collapse diagnostics: their definitions on hand-made batches -------------------------------


def test_uniform_targets_have_entropy_log_k_per_sample_and_in_their_mean():
    targets = torch.full((6, 8), 1 / 8)
    torch.testing.assert_close(target_entropy(targets), torch.tensor(math.log(8)))
    torch.testing.assert_close(mean_target_entropy(targets), torch.tensor(math.log(8)))


def test_a_one_hot_collapse_onto_one_prototype_has_zero_entropies_and_cosine_one():
    targets = F.one_hot(torch.full((5,), 3), 8).float()
    assert target_entropy(targets) == 0 and mean_target_entropy(targets) == 0
    features = torch.randn(1, 16).expand(5, -1) * torch.arange(1.0, 6.0)[:, None]
    torch.testing.assert_close(feature_cosine(features), torch.tensor(1.0))


def test_a_mixed_batch_by_hand():
    # two one-hot targets on different prototypes and one uniform over 4
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(target_entropy(targets), torch.tensor(math.log(4) / 3))
    # their mean: (1.25, 1.25, 0.25, 0.25) / 3
    mean = torch.tensor([1.25, 1.25, 0.25, 0.25]) / 3
    expected = -(mean * mean.log()).sum()
    torch.testing.assert_close(mean_target_entropy(targets), expected)
    # features (1, 0), (0, 1), (1, 1): cosines 0, 1/sqrt(2), 1/sqrt(2) over the three pairs
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    torch.testing.assert_close(feature_cosine(features), torch.tensor(2 / math.sqrt(2) / 3))
