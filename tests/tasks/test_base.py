"""What every task shares: step values logged on logging steps only, tasks built from configs and
restored from their checkpoints, the run config in checkpoints, the monitored metric, pretrained
weights loaded into each task's target when fitting starts."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger

from vitlab.checkpoint_file import RUN_CONFIG_KEY
from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.base import RecipeTask, build_task
from vitlab.tasks.classification import ClassificationTask
from vitlab.tasks.linear_probe import LinearProbeTask
from vitlab.tasks.mae import MAEPretrainTask

TASKS = {
    "classification": ClassificationTask,
    "linear_probe": LinearProbeTask,
    "mae_pretrain": MAEPretrainTask,
}


# the digits recipes whose task takes pretrained weights, and the module that receives them
PRETRAINED_TARGETS: dict[str, Callable[[RecipeTask], torch.nn.Module]] = {
    "digits_mae_finetune": lambda task: task.model,
    "digits_linear_probe": lambda task: task.model,
    "digits_segmentation": lambda task: task.model.backbone,
    "digits_detection": lambda task: task.model.vit,
}


@pytest.fixture
def task_config(
    vit_config, mae_config, optimizer_config, task_recipe
) -> Callable[[str], dict[str, Any]]:
    """``task_config(name)``: the config of a tiny task of each kind, as build_task receives it."""

    def config(name: str) -> dict[str, Any]:
        task = TASKS[name]
        model = mae_config() if task is MAEPretrainTask else vit_config()
        target = f"{task.__module__}.{task.__qualname__}"
        parts = {"_target_": target, "model": model, "optimizer": optimizer_config()}
        return parts | task_recipe(name)

    return config


class RecordLoss(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def outputs(task: RecipeTask, images: torch.Tensor) -> torch.Tensor:
    """What the task computes on ``images``; for the MAE under a fixed mask, probe included."""
    if not isinstance(task, MAEPretrainTask):
        return task(images)
    generator = torch.Generator().manual_seed(0)
    latent, _, ids_restore = task.model.forward_encoder(images, task.model.mask_ratio, generator)
    pred = task.model.forward_decoder(latent, ids_restore)
    return torch.cat([pred.flatten(1), task.probe(latent[:, 0])], dim=1)


def test_step_values_are_logged_on_logging_steps_only(
    tmp_path: Path, monkeypatch, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    task = ClassificationTask(
        vit_config(patch_size=4, embed_dim=16, depth=1, num_heads=2),
        optimizer_config(),
        **task_recipe("classification"),
    )
    logged_steps = []
    log = task.log

    def counting_log(name, value, *args, **kwargs):
        if name == "train/loss":
            logged_steps.append(task.global_step)
        log(name, value, *args, **kwargs)

    monkeypatch.setattr(task, "log", counting_log)
    record = RecordLoss()
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=7,
        limit_val_batches=0,
        log_every_n_steps=3,
        callbacks=[record],
        logger=CSVLogger(tmp_path, name="csv"),
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))

    # Lightning writes steps 3 and 6 (global steps 2 and 5): self.log ran for those alone
    assert logged_steps == [2, 5]
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    losses = {int(row["step"]): float(row["train/loss"]) for row in rows if row["train/loss"]}
    assert losses == {2: pytest.approx(record.losses[2]), 5: pytest.approx(record.losses[5])}
    assert task.progress_bar_values["train/loss"] == pytest.approx(record.losses[5])


@pytest.mark.parametrize("name", TASKS)
def test_build_task_builds_the_model_and_optimizer_from_their_configs(name: str, task_config):
    config = task_config(name)
    task = build_task(config)
    assert type(task) is TASKS[name]
    assert isinstance(task.model, torch.nn.Module)
    assert task.optimizer_factory.func is torch.optim.AdamW
    assert task.hparams.model == config["model"] and task.hparams.optimizer == config["optimizer"]


@pytest.mark.parametrize("name", TASKS)
def test_a_task_saved_by_fit_loads_from_its_checkpoint_with_equal_outputs(
    name: str, task_config, quiet_trainer, tmp_path: Path
):
    torch.manual_seed(0)
    task = build_task(task_config(name))
    task.run_config = {"data": {"num_classes": 10}}
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        enable_checkpointing=True,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    path = trainer.checkpoint_callback.best_model_path
    assert torch.load(path, weights_only=True)[RUN_CONFIG_KEY] == task.run_config

    loaded = TASKS[name].load_from_checkpoint(path)
    assert loaded.hparams == task.hparams
    fresh = build_task(task_config(name)).eval()
    task.eval(), loaded.eval()
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = outputs(task, images)
        torch.testing.assert_close(outputs(loaded, images), expected, rtol=0, atol=0)
        assert not torch.allclose(outputs(fresh, images), expected)  # the weights came back


def test_a_checkpoint_without_a_run_config_has_none(
    tmp_path: Path, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    task = ClassificationTask(vit_config(), optimizer_config(), **task_recipe("classification"))
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert RUN_CONFIG_KEY not in torch.load(tmp_path / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("name", TASKS)
def test_the_val_metric_names_are_what_validation_logs(name: str, task_config, quiet_trainer):
    task = build_task(task_config(name))
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    logged = {key for key in trainer.callback_metrics if key.startswith("val/")}
    assert set(task.val_metric_names()) == logged
    assert task.monitor in logged


def test_monitor_and_mode_are_kept_and_a_mode_other_than_min_or_max_is_refused(
    vit_config, optimizer_config, task_recipe
):
    recipe = task_recipe("classification")
    assert (recipe["monitor"], recipe["mode"]) == ("val/acc1", "max")
    changed = task_recipe("classification", monitor="val/loss", mode="min")
    task = ClassificationTask(vit_config(), optimizer_config(), **changed)
    assert (task.monitor, task.mode) == ("val/loss", "min")
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'best'"):
        ClassificationTask(
            vit_config(), optimizer_config(), **task_recipe("classification", mode="best")
        )


@pytest.mark.parametrize("experiment", PRETRAINED_TARGETS)
def test_fitting_starts_from_the_pretrained_weights_in_the_tasks_target(
    experiment: str, compose_config, tiny_vit, quiet_trainer, tmp_path: Path
):
    overrides = [
        f"experiment={experiment}",
        f"task.pretrained={tmp_path / 'encoder.pth'}",
        "task.optimizer.lr=0",  # the step taken changes no weight
        f"paths.data_dir={tmp_path / 'data'}",
        "data.batch_size=4",
    ]
    if experiment in ("digits_segmentation", "digits_detection"):
        overrides.append("data.split_sizes={train:8,val:4,test:4}")  # a few digit canvases
    cfg = compose_config(*overrides)
    # a ViT of the recipe's shape (model=vit_digits), its own random weights
    encoder = tiny_vit(embed_dim=64, depth=4, patch_size=cfg.model.patch_size)
    torch.save(encoder.state_dict(), tmp_path / "encoder.pth")
    task = build_task(cfg.task)
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(task, datamodule=instantiate(cfg.data))
    loaded = PRETRAINED_TARGETS[experiment](task).state_dict()
    for name, tensor in encoder.state_dict().items():
        if name.startswith("blocks."):
            torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
