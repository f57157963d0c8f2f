"""Loading vitlab, MAE-release and timm checkpoints into a ViT for fine-tuning and probing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from tests.helpers import mae_release
from vitlab.data.digits import DigitsDataModule
from vitlab.errors import UserError
from vitlab.models.checkpoint import load_pretrained, read_state_dict
from vitlab.models.pos_embed import resample
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.classification import ClassificationTask
from vitlab.tasks.mae import MAEPretrainTask
from vitlab.weights import check_source


def encoder_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.startswith(("head", "fc_norm", "norm", "mask_token", "decoder_"))
    }


def assert_same_encoder(model: torch.nn.Module, source: torch.nn.Module) -> None:
    expected = encoder_state(source)
    assert encoder_state(model).keys() == expected.keys()
    for name, tensor in encoder_state(model).items():
        torch.testing.assert_close(tensor, expected[name], msg=name)


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_timm_state_dict_gives_timm_features(tmp_path: Path, global_pool: str):
    reference = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        num_classes=5,
        global_pool=global_pool,
    ).eval()
    torch.save(reference.state_dict(), tmp_path / "timm.pth")
    model = VisionTransformer(
        img_size=32,
        patch_size=8,
        num_classes=7,
        embed_dim=192,
        depth=2,
        num_heads=3,
        global_pool=global_pool,
    ).eval()
    head = model.head.weight.clone()
    load_pretrained(model, tmp_path / "timm.pth")
    images = torch.randn(2, 3, 32, 32)
    features = model.forward_head(model.forward_features(images), pre_logits=True)
    expected = reference.forward_head(reference.forward_features(images), pre_logits=True)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.head.weight, head)  # the classifier is never loaded


def release_checkpoint() -> dict[str, torch.Tensor]:
    """A pretraining checkpoint of the MAE release's model (its keys and shapes, random values)
    at the tiny ViT's size: 8x8 one-channel images, 2x2 patches, width 32, 2 blocks."""
    size = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2)
    shapes = mae_release.mae_state_shapes(**size, decoder_embed_dim=16, decoder_depth=1)
    return {name: torch.randn(shape) for name, shape in shapes.items()}


@pytest.mark.parametrize("compiled", [False, True], ids=["plain", "compiled"])
def test_official_mae_checkpoint_loads_into_fine_tuning(tmp_path: Path, tiny_vit, compiled: bool):
    state = release_checkpoint()
    # the release's file ({"model": ...}); torch.compile'd models save keys under _orig_mod.
    prefix = "_orig_mod." if compiled else ""
    saved = {f"{prefix}{name}": tensor for name, tensor in state.items()}
    torch.save({"model": saved, "epoch": 799}, tmp_path / "mae_pretrain.pth")
    model = tiny_vit(global_pool="avg")
    load_pretrained(model, tmp_path / "mae_pretrain.pth")
    loaded = model.state_dict()
    encoder = [name for name in state if not name.startswith(("mask_token", "decoder_", "norm."))]
    for name in encoder:
        torch.testing.assert_close(loaded[name], state[name], rtol=0, atol=0, msg=name)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_vitlab_lightning_checkpoint_loads_without_decoder_or_probe(
    tmp_path: Path, mae_config, optimizer_config, tiny_vit, task_recipe
):
    task = MAEPretrainTask(mae_config(), optimizer_config(), **task_recipe("mae_pretrain"))
    torch.save({"state_dict": task.state_dict(), "epoch": 3}, tmp_path / "last.ckpt")
    state = read_state_dict(tmp_path / "last.ckpt")
    assert not any(name.startswith(("probe", "decoder_", "mask_token", "model.")) for name in state)
    model = tiny_vit(global_pool="token")
    load_pretrained(model, tmp_path / "last.ckpt")
    assert_same_encoder(model, task.model)
    torch.testing.assert_close(model.norm.weight, task.model.norm.weight)


def test_position_embeddings_are_resampled_to_a_new_grid(tmp_path: Path, tiny_mae, tiny_vit):
    mae = tiny_mae()  # 8x8 images: 4x4 patches
    torch.save({"model": mae.state_dict()}, tmp_path / "mae.pth")
    model = tiny_vit(img_size=16, global_pool="avg")  # 8x8 patches
    load_pretrained(model, tmp_path / "mae.pth")
    assert model.pos_embed.shape == (1, 1 + 64, 32)
    torch.testing.assert_close(model.pos_embed, resample(mae.pos_embed, (8, 8)))
    torch.testing.assert_close(model.pos_embed[:, 0], mae.pos_embed[:, 0])
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 10)


def test_missing_encoder_keys_are_named(tmp_path: Path, tiny_mae, tiny_vit):
    state = tiny_mae().state_dict()
    del state["blocks.1.norm1.weight"]
    torch.save({"model": state}, tmp_path / "mae.pth")
    with pytest.raises(ValueError, match=r"missing 1 keys \(blocks.1.norm1.weight\)"):
        load_pretrained(tiny_vit(global_pool="avg"), tmp_path / "mae.pth")


def test_unexpected_keys_are_named(tmp_path: Path, tiny_mae, tiny_vit):
    state = tiny_mae().state_dict() | {"blocks.2.norm1.weight": torch.ones(32)}
    torch.save(state, tmp_path / "deeper.pth")
    with pytest.raises(ValueError, match=r"unexpected 1 keys \(blocks.2.norm1.weight\)"):
        load_pretrained(tiny_vit(global_pool="avg"), tmp_path / "deeper.pth")


def test_a_checkpoint_of_another_position_encoding_is_named_as_such(tmp_path: Path, tiny_vit):
    torch.save(tiny_vit().state_dict(), tmp_path / "learned.pth")
    with pytest.raises(
        ValueError,
        match=r"unexpected 1 keys \(pos_embed\); was it trained with "
        r"another model.pos_embed than 'rope'\?",
    ):
        load_pretrained(tiny_vit(pos_embed="rope"), tmp_path / "learned.pth")


def test_a_checkpoint_with_layer_scale_names_the_setting(tmp_path: Path, tiny_vit):
    torch.save(tiny_vit(layer_scale_init=0.1).state_dict(), tmp_path / "scaled.pth")
    with pytest.raises(ValueError, match=r"blocks.0.ls1.gamma.*set model.layer_scale_init\?"):
        load_pretrained(tiny_vit(), tmp_path / "scaled.pth")


def test_token_pooling_needs_the_final_norm(tmp_path: Path, tiny_vit):
    """An avg-pooled fine-tuned model has no ``norm``: a cls-token classifier cannot use it."""
    torch.save(tiny_vit(global_pool="avg").state_dict(), tmp_path / "finetuned.pth")
    with pytest.raises(ValueError, match=r"missing 2 keys \(norm.weight, norm.bias\)"):
        load_pretrained(tiny_vit(global_pool="token"), tmp_path / "finetuned.pth")


def test_fine_tuning_layer_decay_scales_every_parameter_by_its_depth(
    tmp_path: Path, tiny_mae, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    torch.save({"model": tiny_mae().state_dict()}, tmp_path / "mae.pth")
    task = ClassificationTask(
        vit_config(global_pool="avg"),
        optimizer_config(lr=1e-3, weight_decay=0.05),
        **task_recipe("mae_finetune", warmup_epochs=0, pretrained=str(tmp_path / "mae.pth")),
    )
    trainer = quiet_trainer(
        max_steps=1,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    lrs = {
        name: group["lr"] for group in trainer.optimizers[0].param_groups for name in group["names"]
    }
    top = lrs["head.weight"]
    depth_of = {
        "cls_token": 0,
        "pos_embed": 0,
        "patch_embed.proj.weight": 0,
        "blocks.0.attn.qkv.weight": 1,
        "blocks.0.norm1.bias": 1,
        "blocks.1.mlp.fc2.weight": 2,
        "fc_norm.weight": 3,
        "head.bias": 3,
    }
    for name, depth in depth_of.items():
        assert lrs[name] == pytest.approx(top * 0.65 ** (3 - depth)), name
    assert len(lrs) == sum(1 for p in task.model.parameters() if p.requires_grad)


LOAD_BY_NAME = """
import sys, torch
from vitlab.models.vit import VisionTransformer
from vitlab.weights import load_weights

for name, out in zip(sys.argv[1::2], sys.argv[2::2]):
    model = VisionTransformer(
        img_size=160, patch_size=16, embed_dim=64, depth=6, num_heads=2, mlp_ratio=3, num_classes=10
    )
    load_weights(model, name)
    torch.save(model.state_dict(), out)
"""


def write_hub_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """A Hugging Face Hub cache holding ``files`` of ``repo`` at its main revision, as a
    download leaves it (``<cache>/models--<org>--<name>/{refs/main,snapshots/<commit>/}``)."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    for name, data in files.items():
        (folder / "snapshots" / commit / name).write_bytes(data)


@pytest.mark.slow
def test_timm_and_hf_hub_names_load_timms_weights_from_the_hugging_face_cache(tmp_path: Path):
    """task.pretrained=timm:<name> / hf-hub:<repo>: timm's published weights through the
    Hugging Face cache (written here; offline: nothing is downloaded)."""
    import safetensors.torch

    weights = timm.create_model("test_vit").state_dict()
    # what timm publishes beside the weights: the architecture and its pretrained config
    pretrained_cfg = timm.models.get_pretrained_cfg("test_vit").to_dict()
    config = {"architecture": "test_vit", "num_classes": 1000, "pretrained_cfg": pretrained_cfg}
    write_hub_cache(
        tmp_path / "hub",
        "timm/test_vit.r160_in1k",  # where timm publishes test_vit's default weights
        {
            "model.safetensors": safetensors.torch.save(weights),
            "config.json": json.dumps(config).encode(),
        },
    )
    names = {
        "timm:test_vit": tmp_path / "timm.pt",
        "hf-hub:timm/test_vit.r160_in1k": tmp_path / "hub.pt",
    }
    arguments = [str(word) for pair in names.items() for word in pair]
    environment = os.environ | {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", LOAD_BY_NAME, *arguments], env=environment, check=True, timeout=300
    )
    for out in names.values():
        loaded = torch.load(out, weights_only=True)
        for name in (
            "patch_embed.proj.weight",
            "pos_embed",
            "blocks.5.mlp.fc2.weight",
            "norm.bias",
        ):
            assert torch.equal(loaded[name], weights[name]), name
        assert not torch.equal(
            loaded["head.weight"][:10], weights["head.weight"][:10]
        )  # not loaded


def test_a_name_without_timm_installed_names_the_timm_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(
        UserError, match=r"^task.pretrained: needs timm: pip install 'vitlab\[timm\]'$"
    ):
        check_source("timm:vit_base_patch16_224", "task.pretrained")
