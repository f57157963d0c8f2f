"""2-D axial RoPE against timm's RoPE-ViT (``vit_*_patch16_rope_224``: Eva with rope attention)."""

import pytest
import torch
from timm.models.eva import Eva

from vitlab.models.checkpoint import load_pretrained
from vitlab.models.rope import AxialRotaryEmbedding
from vitlab.models.vit import VisionTransformer

ARCH = dict(patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=2, num_heads=4)


def timm_rope_vit(img_size: int, global_pool: str, layer_scale_init: float | None) -> Eva:
    """timm's ``vit_small_patch16_rope_224`` arguments (RoPE-ViT's rope-axial) at our tiny size,
    with its layer scale (``gamma_1``/``gamma_2``) or without."""
    return Eva(
        img_size=img_size,
        **ARCH,
        attn_type="rope",
        qkv_bias=True,
        init_values=layer_scale_init,
        global_pool=global_pool,
        use_abs_pos_emb=False,
        use_rot_pos_emb=True,
        rope_grid_indexing="xy",
        rope_temperature=100.0,
    ).eval()


def randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)


@pytest.mark.parametrize(
    ("global_pool", "layer_scale_init"), [("token", None), ("avg", None), ("token", 1e-5)]
)
def test_timm_rope_vit_weights_load_and_give_its_output_here_and_at_another_size(
    global_pool, layer_scale_init, tmp_path
):
    """Nothing position-dependent is stored, so the same file loads at any image size. Layer
    scales (randomised, as every weight) load under our names."""
    reference = timm_rope_vit(8, global_pool, layer_scale_init)
    randomise(reference)
    state = reference.state_dict()
    assert not any("rope" in name or "pos_embed" in name for name in state)
    path = tmp_path / "rope_vit.pth"
    torch.save(state, path)
    for size in (8, 12):
        model = VisionTransformer(
            img_size=size,
            **ARCH,
            global_pool=global_pool,
            pos_embed="rope",
            layer_scale_init=layer_scale_init,
        )
        load_pretrained(model, path)
        for name, tensor in model.state_dict().items():  # the loader leaves the classifier be
            if name.startswith(("head.", "fc_norm.")):
                tensor.copy_(state[name])
        target = timm_rope_vit(size, global_pool, layer_scale_init)
        target.load_state_dict(state)
        images = torch.randn(3, 1, size, size)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(images), target(images), atol=1e-5, rtol=1e-4)


def test_rotated_queries_and_keys_meet_by_their_relative_offset_only():
    grid, head_dim = (3, 4), 16
    rope = AxialRotaryEmbedding(head_dim, grid, num_prefix_tokens=1)
    q, k = torch.randn(head_dim), torch.randn(head_dim)
    tokens = 1 + grid[0] * grid[1]
    logits = rope(q.expand(tokens, -1)) @ rope(k.expand(tokens, -1)).T
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    positions = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    by_offset: dict[tuple[int, int], torch.Tensor] = {}
    for i, pi in enumerate(positions):
        for j, pj in enumerate(positions):
            offset = tuple((pi - pj).tolist())
            by_offset.setdefault(offset, logits[1 + i, 1 + j])
            torch.testing.assert_close(logits[1 + i, 1 + j], by_offset[offset])
    assert len({round(value.item(), 4) for value in by_offset.values()}) > 1
    # the class token is not rotated
    torch.testing.assert_close(logits[0, 0], q @ k)


def test_rotation_keeps_the_input_dtype_under_autocast():
    rope = AxialRotaryEmbedding(8, (2, 2))
    q = torch.randn(1, 2, 5, 8, dtype=torch.bfloat16)
    assert rope(q).dtype == torch.bfloat16
