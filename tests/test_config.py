"""Every option of every config group composes, resolves and (where cheap) instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = [
    "model",
    "task",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "debug",
    "experiment",
    "hparams_search",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(*overrides: str, tmp_path: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"paths.log_dir={tmp_path}", *overrides], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg


def test_default_config_is_the_digits_run(tmp_path):
    cfg = compose_train(tmp_path=tmp_path)
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.model.img_size == cfg.data.img_size == 8
    assert cfg.model.num_classes == 10 and cfg.model.in_chans == 1
    assert cfg.task.model == cfg.model
    assert cfg.seed == 42 and cfg.train and cfg.test


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(group, option, tmp_path):
    cfg = compose_train(f"{group}={option}", tmp_path=tmp_path)
    assert OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_instantiates(option, tmp_path):
    cfg = compose_train(f"model={option}", tmp_path=tmp_path)
    with torch.device("meta"):
        model = instantiate(cfg.model)
        out = model(torch.empty(1, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size))
    assert out.shape == (1, cfg.model.num_classes)


@pytest.mark.parametrize("option", ["default", "none"])
def test_callbacks_instantiate(option, tmp_path):
    cfg = compose_train(f"callbacks={option}", tmp_path=tmp_path)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert len(callbacks) == (7 if option == "default" else 0)


def test_a_task_takes_its_backbone_from_the_model_group(tmp_path):
    cfg = compose_train("model=vit_s", "data.img_size=32", "model.img_size=32", tmp_path=tmp_path)
    task = instantiate(cfg.task)
    assert task.model.embed_dim == 384 and len(task.model.blocks) == 12
