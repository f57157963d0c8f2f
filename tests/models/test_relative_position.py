"""BEiT's relative position bias against timm's ``Beit`` (``use_rel_pos_bias``), and the resampling
of its tables when a checkpoint meets another patch grid."""

import pytest
import torch
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple
from timm.models.beit import Beit, gen_relative_position_index

from vitlab.models.checkpoint import load_pretrained
from vitlab.models.relative_position import (
    num_relative_positions,
    relative_position_index,
    resample_table,
)
from vitlab.models.vit import VisionTransformer

ARCH = dict(patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=4)
CLASSIFIER = ("head.", "fc_norm.")


def timm_beit(img_size: int, global_pool: str, layer_scale_init: float | None) -> Beit:
    """BEiT's fine-tuning architecture (relative bias in every block, no absolute table), with
    its layer scale (``gamma_1``/``gamma_2``) or without."""
    return Beit(
        img_size=img_size,
        **ARCH,
        global_pool=global_pool,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        init_values=layer_scale_init,
    ).eval()


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return model


@pytest.mark.parametrize("grid", [(4, 4), (2, 5)])
def test_the_index_is_beits(grid):
    index = relative_position_index(grid)
    assert torch.equal(index, gen_relative_position_index(grid))
    assert index.max() == num_relative_positions(grid) - 1


@pytest.mark.parametrize(
    ("global_pool", "layer_scale_init"), [("token", None), ("avg", None), ("avg", 0.1)]
)
def test_timm_beit_weights_load_and_give_beits_output_here_and_at_a_larger_grid(
    global_pool, layer_scale_init, tmp_path
):
    """timm's file (separate q/v biases, per-block tables and layer scales) loads through the
    checkpoint loader; at 16 px the 4x4 tables are resampled to 8x8 as timm's simple resize
    does."""
    reference = randomised(timm_beit(8, global_pool, layer_scale_init))
    path = tmp_path / "beit.pth"
    torch.save(reference.state_dict(), path)
    for size in (8, 16):
        model = VisionTransformer(
            img_size=size,
            **ARCH,
            global_pool=global_pool,
            pos_embed="relative",
            layer_scale_init=layer_scale_init,
        ).eval()
        load_pretrained(model, path)
        target = timm_beit(size, global_pool, layer_scale_init)
        state = {
            name: resize_rel_pos_bias_table_simple(
                tensor, (size // 2,) * 2, target.state_dict()[name].shape
            )
            if name.endswith("relative_position_bias_table")
            else tensor
            for name, tensor in reference.state_dict().items()
        }
        target.load_state_dict(state)
        for name, tensor in model.state_dict().items():  # the loader leaves the classifier be
            if name.startswith(CLASSIFIER):
                tensor.copy_(state[name])
        images = torch.randn(3, 1, size, size)
        with torch.no_grad():
            torch.testing.assert_close(model(images), target(images), atol=1e-5, rtol=1e-4)


def test_resampling_keeps_a_matching_table_and_the_class_token_rows():
    table = torch.randn(num_relative_positions((4, 4)), 3)
    assert resample_table(table, (4, 4)) is table
    larger = resample_table(table, (6, 6))
    assert larger.shape == (num_relative_positions((6, 6)), 3)
    torch.testing.assert_close(larger[-3:], table[-3:])
    with pytest.raises(ValueError, match="square patch grid"):
        resample_table(torch.randn(num_relative_positions((2, 5)), 3), (4, 4))
