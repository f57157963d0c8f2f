"""ViTSegmenter and its decoders: per-pixel logits at the input size; backbone weights under timm
names."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from vitlab.models.checkpoint import load_pretrained
from vitlab.models.seg_decoders import (
    LinearDecoder,
    MaskTransformerDecoder,
    ProgressiveUpsamplingDecoder,
)
from vitlab.models.segmenter import ViTSegmenter
from vitlab.models.vit import VisionTransformer


def vit(img_size: int | tuple[int, int], patch_size: int, **kwargs) -> VisionTransformer:
    config = dict(in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=4)
    return VisionTransformer(img_size, patch_size, **{**config, **kwargs})


DECODERS = {
    "linear": partial(LinearDecoder, hidden_dim=16),
    "pup": partial(ProgressiveUpsamplingDecoder, channels=8),
    "pup_multilevel": partial(ProgressiveUpsamplingDecoder, layers=[0, 1], channels=8),
    "mask_transformer": partial(MaskTransformerDecoder, depth=1),
}


@pytest.mark.parametrize(("img_size", "patch_size"), [(16, 4), ((24, 40), 8), ((28, 42), 14)])
@pytest.mark.parametrize("decoder", DECODERS)
def test_logits_have_the_input_size(img_size, patch_size, decoder):
    segmenter = ViTSegmenter(vit(img_size, patch_size), 7, DECODERS[decoder])
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    logits = segmenter(torch.randn(2, 3, height, width))
    assert logits.shape == (2, 7, height, width)
    logits.sum().backward()  # every parameter is trained (DDP needs none unused)
    assert all(p.grad is not None for p in segmenter.parameters() if p.requires_grad)


def test_progressive_upsampling_draws_boundaries_inside_a_patch():
    """Unlike the linear decoder's bilinear patch logits, SETR-PUP's convs learn a mask that
    changes within a patch: here the left and right halves of each 8-pixel patch."""
    torch.manual_seed(0)
    features = [torch.randn(4, 8, 2, 2)]
    target = (torch.arange(16) % 8 >= 4).long().expand(4, 16, 16)
    decoder = ProgressiveUpsamplingDecoder(8, 2, (8, 8), channels=8, dropout=0.0)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=3e-2)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(decoder(features, (16, 16)), target).backward()
        optimizer.step()
    assert (decoder(features, (16, 16)).argmax(1) == target).float().mean() > 0.95


def test_the_linear_decoder_changes_only_the_logits_near_a_changed_patch():
    decoder = LinearDecoder(32, 3).eval()
    features = torch.randn(1, 32, 4, 4)
    changed = features.clone()
    changed[..., 0, 0] += 1.0  # the top-left patch of a 32x32 image of 8-pixel patches
    difference = (decoder([changed], (32, 32)) - decoder([features], (32, 32))).abs().sum(dim=1)
    assert difference[0, :8, :8].min() > 0
    assert difference[0, 16:, :].max() == 0 and difference[0, :, 16:].max() == 0


def test_backbone_keeps_timm_names_without_a_classifier():
    segmenter = ViTSegmenter(vit(16, 4, global_pool="avg"), 4)
    names = set(segmenter.state_dict())
    assert {"backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.weight"} <= names
    assert "backbone.blocks.1.attn.qkv.weight" in names
    assert not any(name.startswith(("backbone.head", "backbone.fc_norm")) for name in names)
    assert {name.split(".")[0] for name in names} == {"backbone", "decoder"}
    assert segmenter.backbone.num_classes == 0
    assert segmenter.no_weight_decay() == {"backbone.cls_token", "backbone.pos_embed"}
    masks = ViTSegmenter(vit(16, 4), 4, MaskTransformerDecoder)
    assert "decoder.cls_emb" in masks.no_weight_decay()


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
