"""DetectionTask: COCO mAP of its metric (on boxes in the detector's xyxy format), the anchors
of the ViTDetFCOS it trains, a training step on a digit-canvas batch."""

from __future__ import annotations

import torch

from vitlab.models.detector import ViTDetFCOS
from vitlab.tasks.detection import DetectionTask, detection_metric


def test_perfect_predictions_score_map_1():
    targets = [
        {"boxes": torch.tensor([[2.0, 3.0, 18.0, 17.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[1.0, 1.0, 9.0, 12.0], [12.0, 4.0, 30.0, 20.0]]),
            "labels": torch.tensor([2, 1]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    predictions = [target | {"scores": torch.ones(len(target["labels"]))} for target in targets]
    results = detection_metric()(predictions, targets)
    assert results["map"] == 1.0 and results["map_50"] == 1.0
    shifted = [p | {"boxes": p["boxes"] + 4.0} for p in predictions]
    assert detection_metric()(shifted, targets)["map"] < 1.0


def test_a_prediction_at_iou_0_7_with_its_target_scores_map_50_but_not_map_75():
    # xyxy, as the detector predicts and the data yields: 100 px^2 of which the prediction
    # covers 70 (IoU 0.7). Read as xywh or cxcywh, the same numbers overlap at IoU 0.85.
    target = {"boxes": torch.tensor([[10.0, 10.0, 20.0, 20.0]]), "labels": torch.tensor([3])}
    prediction = {
        "boxes": torch.tensor([[10.0, 10.0, 20.0, 17.0]]),
        "labels": torch.tensor([3]),
        "scores": torch.tensor([0.9]),
    }
    results = detection_metric()([prediction], [target])
    assert (results["map_50"].item(), results["map_75"].item()) == (1.0, 0.0)


def test_each_pyramid_level_has_one_anchor_of_its_stride_per_cell_spaced_by_its_stride(tiny_vit):
    strides = [4, 8, 16, 32]
    model = ViTDetFCOS(tiny_vit(img_size=32, patch_size=4), 11, out_channels=32, strides=strides)
    images, _ = model.transform(torch.zeros(1, 1, 32, 32))
    features = list(model.backbone(images.tensors).values())
    (anchors,) = model.anchor_generator(images, features)
    levels = anchors.split([feature.shape[-2:].numel() for feature in features])
    for stride, boxes in zip(strides, levels, strict=True):
        side = 32 // stride
        # torchvision's anchors: centred on the cell's corner (x * stride, y * stride)
        grid = torch.arange(side, dtype=torch.float32) * stride
        centre_y, centre_x = torch.meshgrid(grid, grid, indexing="ij")
        half = stride / 2
        expected = torch.stack(
            [centre_x - half, centre_y - half, centre_x + half, centre_y + half], dim=-1
        )
        assert torch.equal(boxes, expected.reshape(-1, 4)), f"stride {stride}"


def test_a_training_step_returns_the_sum_of_fcos_losses(vit_config, optimizer_config, task_recipe):
    torch.manual_seed(0)
    backbone = vit_config(img_size=32, patch_size=4, num_classes=11, embed_dim=32)
    model = {
        "_target_": "vitlab.models.detector.ViTDetFCOS",
        "backbone": backbone,
        "num_classes": 11,
        "out_channels": 32,
    }
    task = DetectionTask(model, optimizer_config(), **task_recipe("detection"))
    images = torch.randn(2, 1, 32, 32)
    targets = [
        {"boxes": torch.tensor([[2.0, 3.0, 18.0, 17.0]]), "labels": torch.tensor([4])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    loss = task.training_step((images, targets), 0)
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    assert task.val_metric_names() == ["val/map", "val/map_50", "val/map_75"]
