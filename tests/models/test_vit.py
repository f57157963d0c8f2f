import math

import pytest
import timm
import torch

from vitlab.errors import UserError
from vitlab.models.pos_embed import resample
from vitlab.models.vit import Attention, VisionTransformer, patch_grid

# name: (embed_dim, depth, heads, patch, parameters with a 1000-class head at 224x224)
SIZES = {
    "vit_ti": (192, 12, 3, 16, 5_717_416),
    "vit_s": (384, 12, 6, 16, 22_050_664),
    "vit_b": (768, 12, 12, 16, 86_567_656),
    "vit_l": (1024, 24, 16, 16, 304_326_632),
    "vit_h": (1280, 32, 16, 14, 632_045_800),
}


def small_vit(**kwargs) -> VisionTransformer:
    config = dict(img_size=16, patch_size=4, in_chans=3, num_classes=7, embed_dim=32, depth=2)
    return VisionTransformer(**{**config, "num_heads": 4, **kwargs})


@pytest.mark.parametrize("name", SIZES)
def test_every_size_has_the_published_parameter_count_and_output_shape(name):
    dim, depth, heads, patch, expected = SIZES[name]
    with torch.device("meta"):
        model = VisionTransformer(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
        logits = model(torch.empty(2, 3, 224, 224))
        tokens = model.forward_features(torch.empty(2, 3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == expected
    assert logits.shape == (2, 1000)
    assert tokens.shape == (2, 1 + (224 // patch) ** 2, dim)


def test_vit_b16_counts_86_6m_parameters():
    with torch.device("meta"):
        model = VisionTransformer()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 86.6


@pytest.mark.parametrize(
    ("img_size", "patch_size", "in_chans"), [(16, 4, 1), (24, 8, 5), ((16, 32), 8, 3)]
)
def test_any_image_size_divisible_by_the_patch_and_any_channels(img_size, patch_size, in_chans):
    model = small_vit(img_size=img_size, patch_size=patch_size, in_chans=in_chans)
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    out = model(torch.randn(3, in_chans, height, width))
    assert out.shape == (3, 7)
    assert model.patch_embed.num_patches == (height // patch_size) * (width // patch_size)


def test_patch_that_does_not_divide_the_image_is_refused_with_the_valid_sizes():
    with pytest.raises(
        ValueError, match=r"patch size 3x3 does not divide image size 8x8.*\[1, 2, 4, 8\]"
    ):
        patch_grid(8, 3)
    with pytest.raises(ValueError, match="does not divide"):
        small_vit(patch_size=5)
    with pytest.raises(ValueError, match="patch size 0x0 must be positive"):
        patch_grid(8, 0)


@pytest.mark.parametrize(("model_size", "image_size"), [(16, (32, 20)), ((16, 24), (8, 12))])
def test_prepare_tokens_at_another_grid_add_the_table_resampled_to_it(model_size, image_size):
    """Any image the patch tiles: the table resampled to its grid (bicubic, the class token's row
    kept; ``resample``, as checkpoints are), up or down, from a square grid or not."""
    model = small_vit(img_size=model_size)
    images = torch.randn(2, 3, *image_size)
    grid = (image_size[0] // 4, image_size[1] // 4)
    with torch.no_grad():
        tokens = model.prepare_tokens(images)
        table = resample(model.pos_embed, grid, 1, model.patch_embed.grid_size)
        patches = model.patch_embed.proj(images).flatten(2).transpose(1, 2)
    assert tokens.shape == (2, 1 + grid[0] * grid[1], 32)
    torch.testing.assert_close(tokens[:, 1:], patches + table[:, 1:])
    torch.testing.assert_close(
        tokens[:, 0], (model.cls_token + model.pos_embed[:, 0])[0].expand(2, -1)
    )
    assert model(images).shape == (2, 7)


def test_prepare_tokens_put_the_mask_token_where_masked_and_then_the_position():
    model = small_vit(pos_embed="sincos")
    images = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 5]] = mask[1, 15] = True
    mask_token = torch.randn(32)
    with torch.no_grad():
        tokens = model.prepare_tokens(images, mask, mask_token)
        plain = model.prepare_tokens(images)
    table = model.pos_embed[0, 1:]
    patches, plain_patches = tokens[:, 1:], plain[:, 1:]
    torch.testing.assert_close(patches[mask], mask_token + table[mask.nonzero()[:, 1]])
    torch.testing.assert_close(patches[~mask], plain_patches[~mask])
    torch.testing.assert_close(tokens[:, 0], plain[:, 0])


def test_prepare_tokens_keep_equals_gathering_the_full_sequence():
    model = small_vit()
    images = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[3, 0, 9], [15, 7, 1]])
    with torch.no_grad():
        full, kept = model.prepare_tokens(images), model.prepare_tokens(images, keep=keep)
    expected = torch.cat(
        [full[:, :1], full[:, 1:].gather(1, keep[..., None].expand(-1, -1, 32))], 1
    )
    torch.testing.assert_close(kept, expected, rtol=0, atol=0)


@pytest.mark.parametrize("pos_embed", ["relative", "conditional", "rope"])
def test_a_grid_bound_position_encoding_refuses_another_grid_naming_the_key(pos_embed):
    model = small_vit(pos_embed=pos_embed)
    with pytest.raises(UserError, match=rf"^model.pos_embed={pos_embed} encodes the \(4, 4\)"):
        model(torch.randn(1, 3, 32, 32))


def test_an_image_the_patch_does_not_tile_is_refused():
    with pytest.raises(ValueError, match="patch size 4x4 does not divide image size 18x16"):
        small_vit()(torch.randn(1, 3, 18, 16))


def test_token_pooling_classifies_the_normed_class_token():
    model = small_vit(global_pool="token").eval()
    images = torch.randn(2, 3, 16, 16)
    tokens = model.forward_features(images)
    assert isinstance(model.fc_norm, torch.nn.Identity)
    torch.testing.assert_close(model(images), model.head(tokens[:, 0]))


def test_avg_pooling_averages_patch_tokens_through_fc_norm():
    model = small_vit(global_pool="avg").eval()
    images = torch.randn(2, 3, 16, 16)
    tokens = model.forward_features(images)
    assert isinstance(model.norm, torch.nn.Identity)
    expected = model.head(model.fc_norm(tokens[:, 1:].mean(dim=1)))
    torch.testing.assert_close(model(images), expected)


def test_num_classes_zero_returns_features():
    model = small_vit(num_classes=0)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 32)


def test_fused_attention_equals_explicit_softmax_qk_v():
    torch.manual_seed(0)
    attn = Attention(dim=32, num_heads=4).eval()
    x = torch.randn(2, 10, 32)
    qkv = attn.qkv(x).reshape(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.attention_weights(x), weights, atol=1e-6, rtol=1e-5)


def test_attention_maps_are_row_stochastic_per_block():
    model = small_vit().eval()
    maps = model.attention_maps(torch.randn(2, 3, 16, 16))
    assert len(maps) == 2
    assert maps[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 17))


def test_sincos_position_embedding_is_fixed():
    model = small_vit(pos_embed="sincos")
    assert not model.pos_embed.requires_grad
    assert torch.count_nonzero(model.pos_embed[0, 0]) == 0


def test_drop_path_is_active_only_in_training():
    model = small_vit(drop_path_rate=0.5)
    images = torch.randn(4, 3, 16, 16)
    model.eval()
    torch.testing.assert_close(model(images), model(images))
    model.train()
    torch.manual_seed(0)
    first = model(images)
    torch.manual_seed(1)
    assert not torch.allclose(first, model(images))


def test_state_dict_names_and_logits_match_timm():
    reference = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=5, pretrained=False
    ).eval()
    model = VisionTransformer(
        img_size=32, patch_size=8, num_classes=5, embed_dim=192, depth=12, num_heads=3
    ).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(images), reference(images), atol=1e-5, rtol=1e-5)


def test_layer_scale_has_timms_names_and_gives_timms_logits():
    arch = dict(
        img_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=32, depth=2, num_heads=4
    )
    reference = timm.models.VisionTransformer(**arch, init_values=0.1).eval()
    with torch.no_grad():  # gammas that differ per channel and block
        for name, param in reference.named_parameters():
            if name.endswith("gamma"):
                param.uniform_(-1, 1)
    model = VisionTransformer(**arch, layer_scale_init=0.1).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model(images), reference(images), atol=1e-5, rtol=1e-5)
    assert not any("gamma" in name for name in VisionTransformer(**arch).state_dict())


@pytest.mark.parametrize(("indices", "norm"), [(2, False), ([0, -1], True)])
def test_intermediate_maps_match_timm(indices, norm):
    reference = timm.create_model(
        "vit_tiny_patch16_224", img_size=(16, 24), patch_size=4, depth=3, pretrained=False
    ).eval()
    model = VisionTransformer(
        img_size=(16, 24), patch_size=4, embed_dim=192, depth=3, num_heads=3
    ).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    images = torch.randn(2, 3, 16, 24)
    expected = reference.forward_intermediates(images, indices, norm=norm, intermediates_only=True)
    maps = model.forward_intermediates(images, indices, norm=norm)
    assert [m.shape for m in maps] == [(2, 192, 4, 6)] * len(expected)
    for ours, theirs in zip(maps, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("indices", [0, 5, [4], [-5]])
def test_intermediate_indices_outside_the_model_are_refused(indices):
    with pytest.raises(ValueError, match="4"):
        small_vit(depth=4).forward_intermediates(torch.randn(1, 3, 16, 16), indices)
