"""What Lightning's ThroughputMonitor counts in vitlab's runs: images per batch, and the FLOPs
of a training step, from which it logs FLOP/s and, on GPUs it knows, model FLOP utilisation."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.throughput import measure_flops
from omegaconf import DictConfig

from vitlab.models.vit import to_2tuple


def images_in(batch: tuple[torch.Tensor, ...]) -> int:
    """The images of an ``(images, targets)`` batch."""
    return len(batch[0])


def training_flops(task_cfg: DictConfig, model_cfg: DictConfig, batch_size: int) -> int:
    """FLOPs of one training step's forward and backward through the task's model on a batch of
    ``batch_size`` images, counted on the meta device: no weights allocated, nothing computed."""
    with torch.device("meta"):
        model = instantiate(task_cfg).model
        images = torch.empty(batch_size, model_cfg.in_chans, *to_2tuple(model_cfg.img_size))
        return measure_flops(model, lambda: model(images), loss_fn=first_output_sum)


def first_output_sum(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A scalar to back-propagate from logits, or from a model returning ``(loss, ...)``."""
    return (output if isinstance(output, torch.Tensor) else output[0]).sum()
