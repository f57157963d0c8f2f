"""What the throughput monitor counts: images per batch and a training step's FLOPs, counted on
the meta device for every experiment's model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.fabric.utilities.throughput import measure_flops
from omegaconf import DictConfig, OmegaConf

from vitlab.callbacks.throughput import images_in, training_flops
from vitlab.models.vit import VisionTransformer

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def train_config(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    if OmegaConf.is_missing(cfg.task, "pretrained"):
        # fine-tuning and probing name a checkpoint, which only fitting loads
        cfg.task.pretrained = "unused.ckpt"
    return cfg


def test_images_are_counted_from_the_batch():
    assert images_in((torch.zeros(5, 3, 8, 8), torch.zeros(5))) == 5


def test_a_training_step_costs_three_forwards_of_the_configured_vit():
    cfg = train_config()
    with torch.device("meta"):
        vit = VisionTransformer(**{k: v for k, v in cfg.model.items() if k != "_target_"})
        images = torch.empty(4, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size)
        forward = measure_flops(vit, lambda: vit(images))
    assert training_flops(cfg.task, cfg.model, 4) == pytest.approx(3 * forward, rel=0.1)


def test_a_rectangular_image_size_is_counted():
    square = train_config()
    wide = train_config("model.img_size=[8,16]", "model.pos_embed=learned")
    assert training_flops(wide.task, wide.model, 4) > training_flops(square.task, square.model, 4)


def test_a_frozen_backbone_costs_no_weight_gradients():
    probe = train_config("experiment=digits_linear_probe")
    scratch = train_config("experiment=digits_linear_probe", "task=classification")
    assert training_flops(probe.task, probe.model, 4) < training_flops(
        scratch.task, scratch.model, 4
    )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_model_is_counted_on_the_meta_device(experiment: str):
    cfg = train_config(f"experiment={experiment}")
    assert training_flops(cfg.task, cfg.model, 2) > 0
