"""Linear probing: only the BatchNorm + linear head learns; the encoder stays frozen in eval."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from vitlab.data.digits import DigitsDataModule
from vitlab.models.probe import ProbeHead
from vitlab.tasks.linear_probe import LinearProbeTask


class RecordEncoderMode(L.Callback):
    def __init__(self):
        self.modes: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        model = pl_module.model
        encoder_training = any(
            m.training for n, m in model.named_modules() if not n.startswith("head")
        )
        self.modes.append((encoder_training, model.head.training))


@pytest.fixture
def probe_task(
    tmp_path: Path, tiny_mae, vit_config, optimizer_config, task_recipe
) -> Callable[..., LinearProbeTask]:
    """``probe_task(global_pool="token")``: a probe of a tiny MAE's encoder (saved in tmp_path),
    whose ViT has drop path to keep off."""

    def build(global_pool: str = "token") -> LinearProbeTask:
        torch.save({"model": tiny_mae().state_dict()}, tmp_path / "mae.pth")
        model = vit_config(global_pool=global_pool, drop_path_rate=0.5)
        optimizer = optimizer_config("SGD", lr=0.1, momentum=0.9, weight_decay=0.0)
        pretrained = str(tmp_path / "mae.pth")
        recipe = task_recipe("linear_probe", warmup_epochs=0, pretrained=pretrained)
        return LinearProbeTask(model, optimizer, **recipe)

    return build


@pytest.fixture
def fit(tmp_path: Path, quiet_trainer) -> Callable[..., L.Trainer]:
    """``fit(task, callbacks)``: 2 short epochs on the digits."""

    def run(task: LinearProbeTask, callbacks: list[L.Callback]) -> L.Trainer:
        trainer = quiet_trainer(
            default_root_dir=tmp_path,
            max_epochs=2,
            limit_train_batches=5,
            limit_val_batches=2,
            limit_test_batches=2,
            log_every_n_steps=5,
            callbacks=callbacks,
        )
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
        return trainer

    return run


def test_only_the_head_trains_and_the_encoder_stays_in_eval_mode(tmp_path: Path, probe_task, fit):
    task = probe_task(global_pool="avg")
    record = RecordEncoderMode()
    fit(task, [record])
    loaded = torch.load(tmp_path / "mae.pth", weights_only=True)["model"]
    after = task.model.state_dict()
    for name, tensor in loaded.items():
        if name in after and not name.startswith("norm."):
            assert torch.equal(after[name], tensor), name  # pretrained weights, unchanged
    assert torch.equal(task.model.fc_norm.weight, torch.ones(32))  # frozen fc_norm
    assert record.modes and all(mode == (False, True) for mode in record.modes)
    assert task.model.head[0].num_batches_tracked > 0  # the probe's BatchNorm did learn


def test_head_is_batchnorm_without_affine_then_linear_and_alone_in_the_optimizer(probe_task, fit):
    task = probe_task()
    norm, linear = task.model.head
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine
    assert isinstance(linear, nn.Linear) and linear.out_features == 10
    trainer = fit(task, [])
    optimized = {p for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {linear.weight, linear.bias}
    assert not any(
        p.requires_grad for n, p in task.model.named_parameters() if not n.startswith("head")
    )


class ProbeAtFitStart(L.Callback):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weight = pl_module.model.head[1].weight.detach().clone()


def test_the_probe_starts_as_the_releases_after_the_encoder_is_loaded(probe_task, fit):
    """``main_linprobe.py`` loads the encoder, then ``trunc_normal_(head.weight, std=0.01)``."""
    record = ProbeAtFitStart()
    fit(probe_task(), [record])
    assert record.weight.std() == pytest.approx(0.01, rel=0.2)


def test_probe_reports_classification_metrics(probe_task, fit):
    task = probe_task()
    trainer = fit(task, [])
    assert {"train/loss", "train/acc1", "val/acc1", "val/loss"} <= trainer.callback_metrics.keys()
    trainer.test(task, datamodule=DigitsDataModule(batch_size=32))
    assert {"test/acc1", "test/acc5", "test/loss"} <= trainer.callback_metrics.keys()


def test_a_probe_keeps_an_ema_of_the_probed_model_when_asked(
    vit_config, optimizer_config, quiet_trainer, task_recipe
):
    recipe = task_recipe("linear_probe", ema_decay=0.5)
    task = LinearProbeTask(vit_config(), optimizer_config("SGD"), **recipe)
    assert isinstance(task.model_ema.module.head, ProbeHead)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    assert {"val/acc1", "val_ema/acc1"} <= trainer.callback_metrics.keys()
