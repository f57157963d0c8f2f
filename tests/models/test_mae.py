"""MAE model: masking, initialisation and weight decay as the release's, loss on masked patches
only, patchify round trip, the release's state dict, and an encoder whose position embeddings
and drop path the MAE keeps."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hydra.utils import instantiate
from timm.optim import param_groups_weight_decay
from torch import nn

from tests.helpers import mae_release
from vitlab.models.mae import random_masking
from vitlab.models.pos_embed import sincos_2d
from vitlab.optim import param_groups


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# (mask ratio, patches the release's int(16 * (1 - r)) keeps of 16): 0.7 and 0.9 keep one fewer
# than rounding would
VISIBLE_OF_16 = [(0.25, 12), (0.5, 8), (0.7, 4), (0.75, 4), (0.9, 1)]


@pytest.mark.parametrize(("mask_ratio", "num_visible"), VISIBLE_OF_16)
def test_encoder_sees_only_the_visible_patches(tiny_mae, mask_ratio: float, num_visible: int):
    model = tiny_mae(mask_ratio=mask_ratio)
    latent, mask, _ = model.forward_encoder(torch.randn(3, 1, 8, 8), mask_ratio)
    assert latent.shape == (3, 1 + num_visible, 32)
    assert (mask.sum(dim=1) == 16 - num_visible).all()


@pytest.mark.parametrize(("length", "mask_ratio"), [(16, 0.9), (16, 0.7), (196, 0.75), (10, 0.6)])
def test_random_masking_draws_and_keeps_what_the_releases_does(length: int, mask_ratio: float):
    tokens = torch.randn(3, length, 4)
    torch.manual_seed(0)
    expected = mae_release.random_masking(tokens, mask_ratio)
    torch.manual_seed(0)
    keep, mask, ids_restore = random_masking(3, length, mask_ratio)
    visible = tokens.gather(1, keep[..., None].expand(-1, -1, 4))
    names = ("visible", "mask", "ids_restore")
    for name, value, reference in zip(names, (visible, mask, ids_restore), expected, strict=True):
        torch.testing.assert_close(value, reference, rtol=0, atol=0, msg=name)


def test_random_masking_returns_the_kept_indices_and_how_to_restore_the_order():
    tokens = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10, 1)
    keep, mask, ids_restore = random_masking(2, 10, 0.6)
    visible = tokens.gather(1, keep[..., None])
    assert visible.shape == (2, 4, 1)
    for sample in range(2):
        kept = tokens[sample, mask[sample] == 0, 0]
        assert set(visible[sample, :, 0].tolist()) == set(kept.tolist())
    shuffled = tokens.gather(1, ids_restore.argsort(dim=1)[..., None])
    assert torch.equal(shuffled[:, :4], visible)
    assert torch.equal(shuffled.gather(1, ids_restore[..., None]), tokens)


def test_masks_differ_between_samples():
    _, mask, _ = random_masking(8, 16, 0.75)
    assert len({tuple(row.tolist()) for row in mask}) > 1


def test_a_seeded_generator_draws_the_same_masks_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = random_masking(4, 16, 0.75, generator=seeded(5))
    again = random_masking(4, 16, 0.75, generator=seeded(5))
    other = random_masking(4, 16, 0.75, generator=seeded(6))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_the_encoder_takes_the_vits_prepared_tokens_of_the_visible_patches(
    tiny_mae, tiny_vit, pos_embed
):
    """MAE's tokens are the encoder ViT's ``prepare_tokens`` with ``keep``, which equal the
    release's: patches plus their position, gathered, after the class token plus its own."""
    encoder = tiny_vit(pos_embed=pos_embed)
    model = tiny_mae(encoder=encoder)
    images = torch.randn(3, 1, 8, 8)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        _, mask, ids_restore = model.forward_encoder(images, 0.75, seeded())
    keep = ids_restore.argsort(dim=1)[:, :4]
    assert torch.equal(mask.gather(1, keep), torch.zeros(3, 4))
    with torch.no_grad():
        expected = encoder.prepare_tokens(images, keep=keep)
        patches = encoder.patch_embed(images) + encoder.pos_embed[:, 1:]
        visible = patches.gather(1, keep[..., None].expand(-1, -1, 32))
        cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(3, -1, -1)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(expected, torch.cat([cls, visible], dim=1), rtol=0, atol=0)


def test_unpatchify_inverts_patchify(tiny_mae, tiny_vit):
    model = tiny_mae(encoder=tiny_vit(img_size=(8, 12), patch_size=(2, 4), in_chans=3))
    images = torch.randn(2, 3, 8, 12)
    patches = model.patchify(images)
    assert patches.shape == (2, 4 * 3, 2 * 4 * 3)
    assert torch.equal(model.unpatchify(patches), images)
    # each patch holds the pixels of its own image region
    assert torch.equal(patches[0, 1].reshape(2, 4, 3).permute(2, 0, 1), images[0, :, 0:2, 4:8])


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_ignores_predictions_of_visible_patches(tiny_mae, norm_pix_loss: bool):
    model = tiny_mae(norm_pix_loss=norm_pix_loss)
    images = torch.randn(2, 1, 8, 8)
    loss, pred, mask = model(images)
    changed = pred.detach().clone()
    changed[mask == 0] += 10.0
    assert model.forward_loss(images, changed, mask) == pytest.approx(loss.item())
    changed[mask == 1] += 10.0
    assert model.forward_loss(images, changed, mask) > loss + 1


def test_loss_is_zero_for_a_perfect_reconstruction(tiny_mae):
    model = tiny_mae(norm_pix_loss=False)
    images = torch.randn(2, 1, 8, 8)
    _, _, mask = model(images)
    assert model.forward_loss(images, model.patchify(images), mask) == 0


def test_backward_reaches_encoder_and_decoder_but_not_fixed_embeddings(tiny_mae, tiny_vit):
    model = tiny_mae(encoder=tiny_vit(pos_embed="sincos"))
    loss, _, _ = model(torch.randn(2, 1, 8, 8))
    loss.backward()
    for name in (
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "mask_token",
        "decoder_blocks.0.mlp.fc1.weight",
        "decoder_pred.weight",
    ):
        assert model.get_parameter(name).grad is not None, name
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed.data, sincos_2d(32, (4, 4), cls_token=True))


def test_learned_position_embeddings_of_the_encoder_are_trained(tiny_mae, tiny_vit):
    model = tiny_mae(encoder=tiny_vit(pos_embed="learned"))
    assert model.pos_embed.requires_grad
    assert not torch.equal(model.pos_embed.data, sincos_2d(32, (4, 4), cls_token=True))
    loss, _, _ = model(torch.randn(2, 1, 8, 8))
    loss.backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad.abs().sum() > 0
    assert "pos_embed" in dict(model.named_parameters())


def test_drop_path_of_the_encoder_drops_paths_in_training_only(tiny_mae, tiny_vit):
    model = tiny_mae(encoder=tiny_vit(drop_path_rate=0.5))
    assert [block.drop_path.p for block in model.blocks] == [0.0, 0.5]
    images = torch.randn(16, 1, 8, 8)

    def latent() -> torch.Tensor:
        with torch.no_grad():
            return model.forward_encoder(images, 0.5, seeded())[0]  # the same mask every time

    model.train()
    assert not torch.equal(latent(), latent())
    model.eval()
    assert torch.equal(latent(), latent())


def test_without_drop_path_training_forwards_repeat(tiny_mae):
    model = tiny_mae().train()
    images = torch.randn(4, 1, 8, 8)
    first = model.forward_encoder(images, 0.5, seeded())[0]
    assert torch.equal(first, model.forward_encoder(images, 0.5, seeded())[0])


def test_an_average_pooling_encoder_gets_a_final_norm(tiny_mae, tiny_vit):
    encoder = tiny_vit(global_pool="avg")
    assert isinstance(encoder.norm, torch.nn.Identity)
    model = tiny_mae(encoder=encoder)
    assert isinstance(model.norm, torch.nn.LayerNorm) and model.norm.eps == 1e-6
    assert {"norm.weight", "norm.bias"} <= set(model.state_dict())


def test_the_state_dict_is_the_releases_mae_vit_base_patch16_dec512d8b(compose_config):
    """experiment=mae_pretrain (ViT-B, the task group's decoder) builds the release's model."""
    cfg = compose_config("experiment=mae_pretrain")
    with torch.device("meta"):
        model = instantiate(cfg.task.model)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert shapes == mae_release.mae_state_shapes()


def test_initialisation_is_the_releases_in_its_order(tiny_mae):
    model = tiny_mae()
    reference = copy.deepcopy(model)
    torch.manual_seed(0)
    model.initialize_weights()
    torch.manual_seed(0)
    mae_release.initialize_weights(reference)
    expected = reference.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_a_new_mae_is_initialised_as_the_release_encoder_included(tiny_mae, tiny_vit, pos_embed):
    """Every Linear xavier-uniform (not the supervised ViT's truncated normal, std 0.02, whose
    spread is several times smaller at these widths), norms 1 / 0, biases 0, tokens normal."""
    torch.manual_seed(0)
    model = tiny_mae(encoder=tiny_vit(pos_embed=pos_embed, embed_dim=64), decoder_embed_dim=64)
    weights = {"patch_embed.proj": model.patch_embed.proj.weight.detach().flatten(1)}
    weights |= {
        name: m.weight.detach() for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    assert any(name.startswith("blocks.") for name in weights)
    for name, weight in weights.items():
        bound = math.sqrt(6 / sum(weight.shape))  # xavier-uniform: U(-bound, bound)
        assert weight.abs().max() <= bound, name
        assert weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.2), name
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.LayerNorm):
            assert torch.count_nonzero(module.bias) == 0, name
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
    tokens = torch.cat([model.cls_token.detach().flatten(), model.mask_token.detach().flatten()])
    assert tokens.std() == pytest.approx(0.02, rel=0.3)


def test_pretraining_decays_every_weight_the_release_decays(tiny_mae):
    """``main_pretrain.py``: ``optim_factory.add_weight_decay(model, args.weight_decay)``, timm's
    ``param_groups_weight_decay`` today, with no skip list: class and mask tokens decay."""
    model = tiny_mae()
    expected = {
        id(p): group["weight_decay"]
        for group in param_groups_weight_decay(model, 0.05)
        for p in group["params"]
    }
    groups = param_groups(model, 0.05)
    assert {id(p): group["weight_decay"] for group in groups for p in group["params"]} == expected
    assert expected[id(model.cls_token)] == expected[id(model.mask_token)] == 0.05


def test_mask_ratio_out_of_range_is_rejected(tiny_mae):
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae(mask_ratio=1.0)


@pytest.mark.parametrize("pos_embed", ["relative", "conditional", "rope"])
def test_an_encoder_without_a_position_table_is_refused(tiny_mae, tiny_vit, pos_embed):
    """The encoder sees a random subset of the patches: position must travel with each token."""
    with pytest.raises(
        ValueError, match=f"model.pos_embed must be learned or sincos, got '{pos_embed}'"
    ):
        tiny_mae(encoder=tiny_vit(pos_embed=pos_embed))
