"""Every option of every config group composes, resolves and (where cheap) instantiates; the
recipes reach the objects they configure."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from tests.helpers.cli import logging_restored
from vitlab import run
from vitlab.cli import CONFIG_PATH, train
from vitlab.errors import UserError
from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.recipes import check_recipe_named, with_recipe
from vitlab.tasks.base import build_task

CONF = Path(CONFIG_PATH)
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
    "extras",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def group_options() -> list[tuple[str, str]]:
    return [(group, option) for group in GROUPS for option in options(group)]


def test_default_config_is_the_digits_run(compose_config):
    cfg = compose_config()
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.model.img_size == cfg.data.img_size == 8
    assert cfg.model.num_classes == 10 and cfg.model.in_chans == 1
    assert cfg.task.model == cfg.model
    assert cfg.seed == 42 and cfg.train and cfg.test
    # train.yaml's recipe: experiment=digits
    assert cfg.task.optimizer.lr == 1e-2 and cfg.task.warmup_epochs == 10
    assert cfg.trainer.max_epochs == 100 and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.num_threads == 1
    assert cfg.trainer.precision in ("32-true", "bf16-mixed")


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_option_composes_and_resolves(group, option, compose_config):
    recipe = [] if group == "experiment" else ["experiment=none"]
    cfg = compose_config(*recipe, f"{group}={option}")
    assert OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_instantiates(option, compose_config):
    cfg = compose_config("experiment=none", f"model={option}")
    with torch.device("meta"):
        model = instantiate(cfg.model)
        out = model(torch.empty(1, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size))
    assert out.shape == (1, cfg.model.num_classes)


@pytest.mark.parametrize("option", ["default", "none"])
def test_callbacks_instantiate(option, compose_config):
    cfg = compose_config(f"callbacks={option}")
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert len(callbacks) == (8 if option == "default" else 0)


def test_a_task_takes_its_backbone_from_the_model_group(compose_config):
    cfg = compose_config("experiment=none", "model=vit_s", "model.img_size=32")
    assert cfg.data.img_size == 32
    task = build_task(cfg.task)
    assert task.model.embed_dim == 384 and len(task.model.blocks) == 12


@pytest.mark.parametrize("option", options("task"))
def test_the_tasks_monitor_and_mode_pick_the_checkpoint_and_stop_early(option, compose_config):
    cfg = compose_config("experiment=none", f"task={option}", "callbacks=[default,early_stopping]")
    assert cfg.task.mode in ("min", "max")
    for callback in ("model_checkpoint", "early_stopping"):
        assert cfg.callbacks[callback].monitor == cfg.task.monitor, callback
        assert cfg.callbacks[callback].mode == cfg.task.mode, callback
    checkpoint = instantiate(cfg.callbacks.model_checkpoint)
    assert (checkpoint.monitor, checkpoint.mode) == (cfg.task.monitor, cfg.task.mode)


def test_changing_the_monitor_moves_the_callbacks_with_it(compose_config):
    cfg = compose_config(
        "task.monitor=val/loss", "task.mode=min", "callbacks=[default,early_stopping]"
    )
    assert cfg.callbacks.model_checkpoint.monitor == cfg.callbacks.early_stopping.monitor
    assert cfg.callbacks.early_stopping.monitor == "val/loss"
    assert cfg.callbacks.model_checkpoint.mode == cfg.callbacks.early_stopping.mode == "min"


def test_mae_pretraining_encodes_with_the_chosen_model(compose_config):
    cfg = compose_config("experiment=none", "task=mae_pretrain", "model=vit_l")
    with torch.device("meta"):
        task = build_task(cfg.task)
    assert isinstance(task.model, MaskedAutoencoderViT)
    assert task.model.embed_dim == 1024 and len(task.model.blocks) == 24
    assert task.model.pos_embed.is_meta


def test_the_mae_encoder_keeps_the_model_groups_position_embeddings_and_drop_path(
    compose_config,
):
    cfg = compose_config(
        "experiment=digits_mae_pretrain", "model.pos_embed=learned", "model.drop_path_rate=0.2"
    )
    task = build_task(cfg.task)
    assert task.model.pos_embed.requires_grad
    assert task.model.blocks[-1].drop_path.p == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("model", "lr", "layer_decay", "drop_path_rate", "max_epochs", "batch_size", "num_nodes"),
    [
        ("vit_b", 5e-4, 0.65, 0.1, 100, 32, 4),
        ("vit_l", 1e-3, 0.75, 0.2, 50, 32, 4),
        ("vit_h", 1e-3, 0.75, 0.3, 50, 16, 8),
    ],
)
def test_mae_finetune_takes_the_chosen_models_row(
    compose_config, model, lr, layer_decay, drop_path_rate, max_epochs, batch_size, num_nodes
):
    cfg = compose_config("experiment=mae_finetune", f"model={model}")
    assert cfg.task.optimizer.lr == pytest.approx(lr)
    assert cfg.task.layer_decay == pytest.approx(layer_decay)
    assert (
        cfg.model.drop_path_rate == cfg.task.model.drop_path_rate == pytest.approx(drop_path_rate)
    )
    assert cfg.trainer.max_epochs == max_epochs
    assert cfg.data.batch_size == batch_size
    assert cfg.trainer.num_nodes == num_nodes


@pytest.mark.parametrize("experiment", ["mae_pretrain", "mae_finetune", "mae_linprobe"])
@pytest.mark.parametrize("model", ["vit_b", "vit_l", "vit_h"])
def test_each_mae_recipe_composes_for_each_model_size(experiment, model, compose_config):
    cfg = compose_config(f"experiment={experiment}", f"model={model}")
    assert OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    encoder = cfg.task.model.get("encoder", cfg.task.model)
    assert encoder == cfg.model


def test_the_digits_mae_recipes_mask_ratio_reaches_the_model_and_the_encoder(compose_config):
    """experiment=digits_mae_pretrain masks half of the 16 patches (not the default 0.75): the
    encoder sees the class token and 8 patches in training, evaluation and the task's forward."""
    cfg = compose_config("experiment=digits_mae_pretrain")
    assert cfg.task.model.mask_ratio == 0.5
    task = build_task(cfg.task)
    assert task.model.mask_ratio == 0.5
    tokens_seen = []
    task.model.blocks.register_forward_pre_hook(
        lambda module, inputs: tokens_seen.append(inputs[0].shape[1])
    )
    task.log = task.log_dict = lambda *args, **kwargs: None
    batch = (torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    task.training_step(batch, 0)
    task.validation_step(batch, 0)
    _, _, mask = task(batch[0])
    assert tokens_seen == [1 + 8] * 3
    assert (mask.sum(dim=1) == 8).all()


def test_mae_pretraining_on_imagenet_keeps_the_final_checkpoint_only(compose_config):
    """What the release fine-tunes is the final epoch: last.ckpt, tested after training."""
    cfg = compose_config("experiment=mae_pretrain")
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert [(c.filename, c.monitor) for c in checkpoints] == [("last", None)]


def test_a_data_model_or_task_choice_without_a_recipe_stops_with_one_line(
    monkeypatch, capsys, tmp_path
):
    """The default recipe is the digits': data=imagenet alone would run it on ImageNet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vitlab-train", "data=imagenet", "logger=none"])
    # Hydra's logging (its train.log handler) set up by the command goes with it
    with logging_restored(), pytest.raises(SystemExit) as exit_info:
        train.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: data=imagenet: the default recipe (experiment=digits, conf/train.yaml) is "
        "written for data=digits, model=vit_digits, task=classification; name one: "
        "experiment=deit_b_imagenet, ibot_vit_b, ibot_vit_s, mae_finetune, mae_linprobe, "
        "mae_pretrain, or experiment=none for the groups' own defaults"
    ]
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["task=mae_pretrain"], "task=mae_pretrain: "),
        (["model=vit_b", "data=cifar10"], "data=cifar10 model=vit_b: "),
        (["data=digits", "model.depth=2", "task.optimizer.lr=1e-3"], None),
        (["experiment=digits", "model=vit_s"], None),
        (["experiment=none", "model=vit_b", "data=imagenet"], None),
        (["experiment=mae_pretrain", "model=vit_l"], None),
    ],
)
def test_only_a_group_choice_without_a_named_recipe_is_refused(overrides, refused, compose_config):
    cfg = compose_config(*overrides)
    if refused is None:
        check_recipe_named(HydraConfig.get().overrides.task, HydraConfig.get().runtime.choices)
        return
    with pytest.raises(UserError) as error:
        run.check_config(cfg)
    assert str(error.value).startswith(refused)


@pytest.mark.parametrize(
    ("arguments", "recipe"),
    [
        (["task=mae_pretrain", "debug=limit"], "digits_mae_pretrain"),
        (["model=vit_b", "data=imagenet"], "deit_b_imagenet"),
        (["-m", "task=ibot", "seed=1,2"], "digits_ibot"),
        (["task=mae_pretrain", "model=vit_l", "data=imagenet"], None),  # none written for it
        (["data=fashion_mnist"], None),  # fmnist's recipes are for its own ViT
        (["-m", "task=mae_pretrain,ibot"], None),  # a sweep: each job is checked
        (["task=classification", "model.depth=2"], None),  # the default recipe's own groups
        (["experiment=none", "task=mae_pretrain"], None),
    ],
)
def test_a_group_choice_gets_the_one_recipe_written_for_it(arguments, recipe):
    added = with_recipe(arguments, "train")[len(arguments) :]
    assert added == ([f"experiment={recipe}"] if recipe else [])


def test_without_a_recipe_the_groups_give_their_own_defaults():
    """experiment=none model=vit_b data=imagenet: the DeiT-style classification group, the
    default trainer, nothing of the digits recipe."""
    cfg = composed("experiment=none", "model=vit_b", "data=imagenet")
    for group, option in [("task", "classification"), ("trainer", "default")]:
        own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
        own.pop("defaults", None)
        for path in leaves(own):
            assert lookup(cfg[group], path) == lookup(own, path), (group, path)
    assert cfg["task"]["label_smoothing"] == 0.1 and cfg["num_threads"] is None
    assert cfg["model"]["embed_dim"] == 768 and cfg["data"]["num_classes"] == 1000


def test_a_users_config_folder_adds_experiments_and_local_settings(compose_config, tmp_path):
    """hydra.searchpath=[file://<folder>]: its experiments and its local/default.yaml join the
    packaged configs, nothing copied."""
    mine = tmp_path / "my_conf"
    (mine / "experiment").mkdir(parents=True)
    (mine / "local").mkdir()
    (mine / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    (mine / "local" / "default.yaml").write_text("# @package _global_\ntags: [mine]\n")
    cfg = compose_config(f"hydra.searchpath=[file://{mine}]", "experiment=mine")
    assert cfg.seed == 7 and list(cfg.tags) == ["mine"]
    assert compose_config().tags == ["dev"]


def composed(*overrides: str) -> dict[str, Any]:
    """train.py's config for ``overrides`` as plain containers, interpolations as written."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)))


def leaves(node: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The key path of every value a config sets."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key)


def lookup(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return ABSENT
        node = node[key]
    return node


ABSENT = object()


@pytest.mark.parametrize("experiment", options("experiment"))
def test_an_experiment_states_only_what_differs_from_the_groups_it_composes(experiment, tmp_path):
    """Composed from its defaults list alone (its body dropped), an experiment's groups give
    values; every value its body sets must change one of them, and reach the composed config."""
    body = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"))
    groups_only = {"defaults": body.pop("defaults", [])}
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "groups_only.yaml").write_text(
        "# @package _global_\n" + OmegaConf.to_yaml(groups_only)
    )
    without = composed(f"hydra.searchpath=[file://{tmp_path}]", "experiment=groups_only")
    full = composed(f"experiment={experiment}")
    restated = []
    for path in leaves(body):
        key, value = ".".join(path), lookup(body, path)
        assert lookup(full, path) == value, f"{key} is overridden after {experiment}"
        if lookup(without, path) == value:
            restated.append(f"{key}={value}")
    assert not restated, f"{experiment} restates what its groups give: {', '.join(restated)}"
