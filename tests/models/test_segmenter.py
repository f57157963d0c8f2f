"""ViTSegmenter: per-pixel logits at the input size; backbone weights under timm names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitlab.models.checkpoint import load_pretrained
from vitlab.models.segmenter import ViTSegmenter
from vitlab.models.vit import VisionTransformer


def vit(img_size: int | tuple[int, int], patch_size: int, **kwargs) -> VisionTransformer:
    config = dict(in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=4)
    return VisionTransformer(img_size, patch_size, **{**config, **kwargs})


@pytest.mark.parametrize(
    ("img_size", "patch_size"), [(16, 4), (32, 4), (32, 8), ((24, 40), 8), (28, 14)]
)
@pytest.mark.parametrize("decoder_hidden_dim", [0, 16])
def test_logits_have_the_input_size(img_size, patch_size, decoder_hidden_dim):
    segmenter = ViTSegmenter(vit(img_size, patch_size), 7, decoder_hidden_dim)
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    logits = segmenter(torch.randn(2, 3, height, width))
    assert logits.shape == (2, 7, height, width)


def test_patch_logits_sit_on_the_patch_grid():
    segmenter = ViTSegmenter(vit((16, 32), 8), 3)
    assert segmenter.patch_logits(torch.randn(1, 3, 16, 32)).shape == (1, 3, 2, 4)


def test_a_patch_changes_only_the_logits_near_it():
    segmenter = ViTSegmenter(vit(32, 8, depth=0), 3).eval()
    images = torch.randn(1, 3, 32, 32)
    changed = images.clone()
    changed[..., :8, :8] += 1.0  # the top-left patch; with no blocks, no attention mixes it
    difference = (segmenter(changed) - segmenter(images)).abs().sum(dim=1)[0]
    assert difference[:8, :8].min() > 0
    assert difference[16:, :].max() == 0 and difference[:, 16:].max() == 0


def test_backbone_keeps_timm_names_without_a_classifier():
    segmenter = ViTSegmenter(vit(16, 4, global_pool="avg"), 4)
    names = set(segmenter.state_dict())
    assert {"backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.weight"} <= names
    assert "backbone.blocks.1.attn.qkv.weight" in names
    assert not any(name.startswith(("backbone.head", "backbone.fc_norm")) for name in names)
    assert {name.split(".")[0] for name in names} == {"backbone", "decoder"}
    assert segmenter.backbone.num_classes == 0
    assert segmenter.no_weight_decay() == {"backbone.cls_token", "backbone.pos_embed"}


def test_a_classifier_checkpoint_loads_into_the_backbone(tmp_path: Path):
    classifier = vit(16, 4)
    path = tmp_path / "vit.pth"
    torch.save(classifier.state_dict(), path)
    segmenter = ViTSegmenter(vit(32, 4), 4)  # a larger grid: position embeddings resampled
    load_pretrained(segmenter.backbone, path)
    assert torch.equal(segmenter.backbone.cls_token, classifier.cls_token)
    assert torch.equal(
        segmenter.backbone.blocks[1].mlp.fc2.weight, classifier.blocks[1].mlp.fc2.weight
    )
    assert segmenter.backbone.pos_embed.shape == (1, 1 + 64, 32)
