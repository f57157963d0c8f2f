import math

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from vitlab.models.pos_embed import resample, sincos_1d, sincos_2d


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
