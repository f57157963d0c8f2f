"""The weight-EMA callback with a real Trainer on digits: what checkpoints hold, which weights a
test after fitting evaluates, and what a resumed fit restores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vitlab.callbacks.ema import EMA
from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.classification import ClassificationTask


@pytest.fixture
def tiny_task(vit_config, optimizer_config) -> Callable[[], ClassificationTask]:
    """``tiny_task()``: the same small digits classifier each time (seeded)."""

    def build() -> ClassificationTask:
        torch.manual_seed(0)
        return ClassificationTask(vit_config(embed_dim=16, num_heads=2), optimizer_config(lr=1e-2))

    return build


class StartingWeights(L.Callback):
    """The module's and the EMA's weights when training starts (after any restore)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ema = next(callback for callback in trainer.callbacks if isinstance(callback, EMA))
        self.raw, self.averaged = weights(pl_module), weights(ema._average_model)


@pytest.fixture
def trainer(tmp_path: Path, quiet_trainer) -> Callable[..., L.Trainer]:
    """``trainer(max_epochs, *callbacks)``: EMA and a checkpoint at ``tmp_path/last.ckpt``."""

    def build(max_epochs: int, *callbacks: L.Callback) -> L.Trainer:
        return quiet_trainer(
            enable_checkpointing=True,
            default_root_dir=tmp_path,
            max_epochs=max_epochs,
            limit_train_batches=4,
            limit_val_batches=1,
            limit_test_batches=1,
            callbacks=[
                EMA(decay=0.5),
                ModelCheckpoint(dirpath=tmp_path, filename="last"),
                *callbacks,
            ],
        )

    return build


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def test_checkpoints_hold_the_average_and_tests_after_fitting_evaluate_it(
    tmp_path: Path, tiny_task, trainer
):
    data = DigitsDataModule(batch_size=8)
    task, fitting = tiny_task(), trainer(max_epochs=1)
    fitting.fit(task, datamodule=data)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[name], raw[name]) for name in raw)

    with torch.no_grad():
        for parameter in task.parameters():
            parameter.zero_()
    fitting.test(task, datamodule=data, ckpt_path=tmp_path / "last.ckpt")
    assert_same(weights(task), averaged)


def test_a_resumed_fit_continues_from_the_raw_weights_and_their_average(
    tmp_path: Path, tiny_task, trainer
):
    data = DigitsDataModule(batch_size=8)
    trainer(max_epochs=1).fit(tiny_task(), datamodule=data)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)

    start = StartingWeights()
    trainer(2, start).fit(tiny_task(), datamodule=data, ckpt_path=tmp_path / "last.ckpt")
    assert_same(start.raw, checkpoint["current_model_state"])
    averaged = {f"module.{name}": value for name, value in checkpoint["state_dict"].items()}
    assert_same(start.averaged, averaged | checkpoint["averaging_state"])
