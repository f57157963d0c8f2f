"""DetectionTask: COCO mAP of its metric, a training step on a digit-canvas batch."""

from __future__ import annotations

import torch

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
