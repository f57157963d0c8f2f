import math

import pytest
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.twins import PosConv

from vitlab.models.pos_embed import (
    POS_EMBEDS,
    POSITION_ENCODINGS,
    PositionEncodingGenerator,
    resample,
    sincos_1d,
    sincos_2d,
)


def test_sincos_1d_matches_the_closed_form():
    dim, positions = 8, torch.arange(5)
    table = sincos_1d(dim, positions)
    for pos in range(5):
        for i in range(dim // 2):
            omega = 1 / 10000 ** (2 * i / dim)
            assert table[pos, i].item() == pytest.approx(math.sin(pos * omega), abs=1e-12)
            assert table[pos, dim // 2 + i].item() == pytest.approx(
                math.cos(pos * omega), abs=1e-12
            )


def test_sincos_2d_encodes_column_then_row_and_a_zero_class_token():
    dim, grid = 16, (3, 4)
    table = sincos_2d(dim, grid, cls_token=True)
    assert table.shape == (1, 1 + 12, dim)
    assert torch.count_nonzero(table[0, 0]) == 0
    row, col = 2, 3
    token = table[0, 1 + row * grid[1] + col]
    torch.testing.assert_close(
        token[: dim // 2], sincos_1d(dim // 2, torch.tensor([col]))[0].float()
    )
    torch.testing.assert_close(
        token[dim // 2 :], sincos_1d(dim // 2, torch.tensor([row]))[0].float()
    )


def test_sincos_needs_a_dimension_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(10, (2, 2))


def test_resample_keeps_the_class_token_and_changes_the_grid():
    table = torch.randn(1, 1 + 16, 8)
    resampled = resample(table, (6, 6))
    assert resampled.shape == (1, 1 + 36, 8)
    torch.testing.assert_close(resampled[:, 0], table[:, 0])
    assert resample(table, (4, 4)) is table


def test_resampling_a_smooth_table_stays_close_to_recomputing_it():
    coarse = sincos_2d(32, (8, 8), cls_token=True)
    fine = resample(coarse, (16, 16))
    # a bicubic resampling of a smooth table is bounded like the table itself
    assert fine.abs().max() <= 1.1


@pytest.mark.parametrize("num_prefix_tokens", [0, 1])
@pytest.mark.parametrize(
    ("side", "new_grid"), [(4, (8, 8)), (14, (16, 16)), (16, (14, 14)), (7, (5, 9))]
)
def test_resampling_is_timms_bicubic_resampling(side, new_grid, num_prefix_tokens):
    """timm's ``resample_abs_pos_embed`` without antialiasing: bicubic, corners not aligned, as
    the MAE release's ``interpolate_pos_embed`` and DeiT's fine-tuning resample."""
    table = torch.randn(1, num_prefix_tokens + side * side, 24)
    expected = resample_abs_pos_embed(
        table, list(new_grid), num_prefix_tokens=num_prefix_tokens, antialias=False
    )
    torch.testing.assert_close(resample(table, new_grid, num_prefix_tokens), expected)


# --- CPVT's position-encoding generator (pos_embed="conditional") --------------------------


def test_the_peg_is_cpvts_on_the_patches_and_passes_the_class_token_through():
    """timm's ``twins.PosConv`` (CPVT's ``PosCNN``) with the same weights."""
    torch.manual_seed(0)
    peg = PositionEncodingGenerator(16, (3, 5))
    reference = PosConv(16, 16)
    reference.proj[0].load_state_dict(peg.proj.state_dict())
    tokens = torch.randn(2, 1 + 15, 16)
    out = peg(tokens)
    torch.testing.assert_close(out[:, 0], tokens[:, 0])
    torch.testing.assert_close(out[:, 1:], reference(tokens[:, 1:], (3, 5)))
    assert peg.proj.groups == 16 and peg.proj.weight.shape == (16, 1, 3, 3)


def test_the_peg_is_translation_equivariant_inside_and_sees_the_border():
    """Shifting the patches by one column shifts the PEG's output with them away from the
    border; next to it the zero padding differs, which is where absolute position comes from."""
    torch.manual_seed(0)
    peg = PositionEncodingGenerator(8, (4, 6), num_prefix_tokens=0)
    with torch.no_grad():
        peg.proj.weight.normal_()
    grid = torch.randn(1, 8, 4, 6)
    shifted = torch.roll(grid, shifts=1, dims=-1)
    as_tokens = lambda g: g.flatten(2).transpose(1, 2)  # noqa: E731
    as_grid = lambda t: t.transpose(1, 2).reshape(1, 8, 4, 6)  # noqa: E731
    out = as_grid(peg(as_tokens(grid)))
    out_shifted = as_grid(peg(as_tokens(shifted)))
    torch.testing.assert_close(out_shifted[..., 2:5], out[..., 1:4])
    assert not torch.allclose(out_shifted[..., 1], out[..., 0])


def test_a_conditional_vit_applies_the_peg_once_after_its_first_block(tiny_vit):
    model = tiny_vit(pos_embed="conditional", depth=3).eval()
    assert model.pos_embed is None
    assert [block.peg is not None for block in model.blocks] == [True, False, False]
    torch.manual_seed(0)
    with torch.no_grad():
        model.blocks[0].peg.proj.weight.normal_()
    images = torch.randn(2, 1, 8, 8)
    peg, model.blocks[0].peg = model.blocks[0].peg, None
    with torch.no_grad():
        tokens = model.blocks[0](model.prepare_tokens(images))
        expected = model.norm(model.blocks[1:](peg(tokens)))
        unconditioned = model.forward_features(images)
        model.blocks[0].peg = peg
        torch.testing.assert_close(model.forward_features(images), expected)
    assert not torch.allclose(expected, unconditioned)


# --- every variant -------------------------------------------------------------------------


@pytest.mark.parametrize("pos_embed", POS_EMBEDS)
def test_attention_maps_reproduce_the_fused_attention_of_every_variant(tiny_vit, pos_embed):
    """The explicit maps (rollout, attention callbacks) hold the bias and rotations the fused
    kernel applies: maps @ v, projected, is each block's attention output."""
    model = tiny_vit(pos_embed=pos_embed).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "relative_position" in name or "peg" in name:
                param.normal_()
    images = torch.randn(2, 1, 8, 8)
    maps = model.attention_maps(images)
    tokens = model.prepare_tokens(images)
    with torch.no_grad():
        for block, weights in zip(model.blocks, maps, strict=True):
            x = block.norm1(tokens)
            _, _, v = block.attn._split_heads(x)
            by_map = block.attn.proj((weights @ v).transpose(1, 2).flatten(2))
            torch.testing.assert_close(by_map, block.attn(x), atol=1e-5, rtol=1e-4)
            tokens = block(tokens)


@pytest.mark.parametrize("pos_embed", ["conditional", "rope"])
def test_grid_free_variants_load_their_weights_at_another_image_size_as_they_are(
    tiny_vit, pos_embed
):
    small = tiny_vit(pos_embed=pos_embed)
    large = tiny_vit(pos_embed=pos_embed, img_size=16)
    large.load_state_dict(small.state_dict())  # strict: no table to resample
    assert large(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_position_parameters_are_exempt_from_weight_decay(tiny_vit):
    relative = tiny_vit(pos_embed="relative").no_weight_decay()
    assert "blocks.1.attn.relative_position_bias_table" in relative
    conditional = tiny_vit(pos_embed="conditional").no_weight_decay()
    assert {"blocks.0.peg.proj.weight", "blocks.0.peg.proj.bias"} <= conditional


@pytest.mark.parametrize("pos_embed", POS_EMBEDS)
def test_each_variant_is_one_module_shared_by_every_attention_that_stores_nothing(
    tiny_vit, pos_embed
):
    """Chosen once at construction; its learned tensors keep timm's names at their owners."""
    model = tiny_vit(pos_embed=pos_embed)
    assert type(model.position) is POSITION_ENCODINGS[pos_embed]
    assert model.pos_embed_type == pos_embed
    assert all(block.attn.position is model.position for block in model.blocks)
    assert not any("position." in name for name in model.state_dict())
    assert ("pos_embed" in model.state_dict()) == (pos_embed in ("learned", "sincos"))


def test_an_unknown_variant_is_refused_with_the_choices(tiny_vit):
    with pytest.raises(ValueError, match="pos_embed: expected one of learned, sincos, relative"):
        tiny_vit(pos_embed="alibi")
