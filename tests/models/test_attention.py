"""Attention rollout and class-token attention grids against plain computations."""

from __future__ import annotations

import torch

from vitlab.models.attention import attention_rollout, cls_attention_grid


def test_attention_maps_match_a_plain_softmax_of_scaled_query_key_products(tiny_vit):
    model = tiny_vit(depth=3).eval()
    images = torch.randn(2, 1, 8, 8)
    maps = model.attention_maps(images)
    assert len(maps) == 3 and maps[0].shape == (2, 4, 17, 17)
    tokens = model.prepare_tokens(images)
    for block, attention in zip(model.blocks, maps, strict=True):
        x = block.norm1(tokens)
        weight, bias = block.attn.qkv.weight, block.attn.qkv.bias
        q, k = (
            (x @ w.T + b).view(2, 17, 4, 8).transpose(1, 2)
            for w, b in zip(weight.chunk(3)[:2], bias.chunk(3)[:2], strict=True)
        )
        expected = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)
        torch.testing.assert_close(attention, expected)
        tokens = block(tokens)


def test_rollout_rows_sum_to_one_and_follow_the_residual_averaged_product(tiny_vit):
    model = tiny_vit(depth=3).eval()
    maps = model.attention_maps(torch.randn(2, 1, 8, 8))
    joint = attention_rollout(maps)
    assert joint.shape == (2, 17, 17)
    torch.testing.assert_close(joint.sum(dim=-1), torch.ones(2, 17))
    expected = torch.eye(17)
    for attention in maps:
        expected = (0.5 * attention.mean(dim=1) + 0.5 * torch.eye(17)) @ expected
    torch.testing.assert_close(joint, expected)


def test_rollout_of_one_block_of_uniform_attention_keeps_half_on_the_token_itself():
    uniform = torch.full((1, 2, 5, 5), 1 / 5)
    joint = attention_rollout([uniform])
    torch.testing.assert_close(torch.diagonal(joint[0]), torch.full((5,), 0.5 + 0.1))


def test_cls_grids_place_each_patch_at_its_row_and_column():
    attention = torch.zeros(1, 2, 7, 7)  # 1 cls + a 2x3 grid of patches
    attention[0, 1, 0, 1 + 3 + 2] = 1.0  # head 1, patch at row 1, column 2
    grid = cls_attention_grid(attention, (2, 3))
    assert grid.shape == (1, 2, 2, 3)
    assert grid[0, 1, 1, 2] == 1.0 and grid.sum() == 1.0
    assert cls_attention_grid(attention[:, 0], (2, 3)).shape == (1, 2, 3)
