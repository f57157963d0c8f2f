"""ViTDet's simple feature pyramid over a plain ViT, and torchvision's FCOS on top of it."""

from __future__ import annotations

import pytest
import torch

from vitlab.models.detector import SimpleFeaturePyramid, ViTDetFCOS
from vitlab.models.vit import VisionTransformer


def vit(img_size: int | tuple[int, int], patch_size: int, in_chans: int = 3) -> VisionTransformer:
    return VisionTransformer(
        img_size, patch_size, in_chans, num_classes=5, embed_dim=32, depth=2, num_heads=4
    )


@pytest.mark.parametrize("patch_size", [4, 16])
def test_pyramid_levels_have_strides_4_to_32_from_the_last_map(patch_size):
    pyramid = SimpleFeaturePyramid(vit((64, 96), patch_size), out_channels=16)
    levels = pyramid(torch.randn(2, 3, 64, 96))
    assert list(levels) == ["4", "8", "16", "32"]
    assert [tuple(level.shape) for level in levels.values()] == [
        (2, 16, 64 // stride, 96 // stride) for stride in (4, 8, 16, 32)
    ]
    # ViTDet's scales for 16-pixel patches: two transposed convs, one, none, a max pool
    if patch_size == 16:
        kinds = [[type(m).__name__ for m in stage[0]] for stage in pyramid.stages]
        assert kinds == [
            ["ConvTranspose2d", "LayerNorm2d", "GELU", "ConvTranspose2d"],
            ["ConvTranspose2d"],
            [],
            ["MaxPool2d"],
        ]


def test_a_scale_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ValueError, match="powers of 2"):
        SimpleFeaturePyramid(vit(48, 4), strides=(4, 12))


def test_fcos_on_the_pyramid_learns_one_batch():
    torch.manual_seed(0)
    detector = ViTDetFCOS(vit(32, 4, in_chans=1), num_classes=4, out_channels=32)
    images = torch.randn(2, 1, 32, 32)
    targets = [
        {"boxes": torch.tensor([[2.0, 3.0, 18.0, 17.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[10.0, 8.0, 30.0, 28.0], [0.0, 0.0, 8.0, 9.0]]),
            "labels": torch.tensor([3, 2]),
        },
    ]
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = sum(detector(images, targets).values())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    detections = detector.eval()(images)
    assert len(detections) == 2 and detections[0]["boxes"].shape[1] == 4
    assert set(detections[0]) == {"boxes", "scores", "labels"}


def test_vit_names_and_no_decay_keys():
    detector = ViTDetFCOS(vit(32, 4), num_classes=3, out_channels=32)
    names = set(detector.state_dict())
    assert "backbone.vit.blocks.1.attn.qkv.weight" in names
    assert not any(name.startswith("backbone.vit.head") for name in names)
    assert detector.no_weight_decay() == {"backbone.vit.cls_token", "backbone.vit.pos_embed"}
