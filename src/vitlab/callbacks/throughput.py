"""What Lightning's ThroughputMonitor counts in vitlab's runs: the images of a batch. The FLOPs
of a training step come from the task (``RecipeTask.training_flops``), from which the monitor
logs FLOP/s and, on GPUs it knows, model FLOP utilisation."""

from __future__ import annotations

import torch


def images_in(batch: tuple[torch.Tensor, ...]) -> int:
    """The images of an ``(images, targets)`` batch."""
    return len(batch[0])
