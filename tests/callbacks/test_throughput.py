"""What the throughput monitor counts: images per batch, and the FLOPs of a training step that
the task measures (``RecipeTask.training_flops``, on the meta device) for every experiment."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.throughput import measure_flops
from omegaconf import DictConfig, OmegaConf

from vitlab.callbacks.throughput import images_in
from vitlab.cli import CONFIG_PATH
from vitlab.tasks.base import RecipeTask, build_task

CONF = Path(CONFIG_PATH)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


EXPERIMENTS = options("experiment")


def with_pretrained(cfg: DictConfig) -> DictConfig:
    """Fine-tuning and probing name a checkpoint, which only fitting loads."""
    if OmegaConf.is_missing(cfg.task, "pretrained"):
        cfg.task.pretrained = "unused.ckpt"
    return cfg


def forward_flops(task: RecipeTask, images_shape: tuple[int, ...]) -> int:
    with torch.device("meta"):
        model = instantiate(task.hparams.model)
        return measure_flops(model, lambda: model(torch.empty(images_shape)))


def test_images_are_counted_from_the_batch():
    assert images_in((torch.zeros(5, 3, 8, 8), torch.zeros(5))) == 5


def test_a_multi_crop_batch_counts_its_images_not_its_views():
    views = [torch.zeros(5, 1, 8, 8)] * 2 + [torch.zeros(5, 1, 4, 4)] * 4
    assert images_in((views, torch.zeros(5))) == 5


def test_a_training_step_costs_three_forwards_of_the_configured_vit(compose_config):
    task = build_task(compose_config().task)
    shape = (4, 1, 8, 8)
    assert task.training_flops(shape) == pytest.approx(3 * forward_flops(task, shape), rel=0.1)


def test_the_input_shape_sets_the_example_input_and_the_flops_of_a_batch(compose_config):
    task = build_task(compose_config().task)
    task.set_input_shape((4, 1, 8, 8))
    assert torch.equal(task.example_input_array, torch.zeros(1, 1, 8, 8))
    # on the meta device, as the task counts: on CPU tensors attention runs a fused kernel that
    # the FLOP counter counts differently
    with torch.device("meta"):
        model = instantiate(task.hparams.model)
        images = torch.empty(4, 1, 8, 8)
        measured = measure_flops(model, lambda: model(images), loss_fn=torch.Tensor.sum)
    assert task.flops_per_batch == measured


def test_a_rectangular_image_size_is_counted(compose_config):
    square = build_task(compose_config().task)
    wide = build_task(compose_config("model.img_size=[8,16]", "model.pos_embed=learned").task)
    assert wide.training_flops((4, 1, 8, 16)) > square.training_flops((4, 1, 8, 8))


def test_a_frozen_backbone_costs_no_weight_gradients(compose_config):
    probe = build_task(with_pretrained(compose_config("experiment=digits_linear_probe")).task)
    scratch = build_task(compose_config("experiment=digits").task)
    shape = (4, 1, 8, 8)
    assert probe.training_flops(shape) < scratch.training_flops(shape)
    # the forward, and the gradients of the head alone
    assert probe.training_flops(shape) == pytest.approx(forward_flops(probe, shape), rel=0.05)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_model_is_counted_on_the_meta_device(experiment: str, compose_config):
    cfg = with_pretrained(compose_config(f"experiment={experiment}"))
    with torch.device("meta"):
        task = build_task(cfg.task)
    batch_shape = instantiate(cfg.data, batch_size=2).batch_shape()
    assert task.training_flops(batch_shape) > 0
