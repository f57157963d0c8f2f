"""A classifier's weight EMA with a real Trainer on digits, as DeiT keeps it: the model trains, is
saved and is evaluated as the model; the average is saved beside it and evaluated too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.classification import ClassificationTask


@pytest.fixture
def ema_task(vit_config, optimizer_config, task_recipe) -> Callable[..., ClassificationTask]:
    """``ema_task(ema_decay=0.5, **task_kwargs)``: the same small digits classifier each time."""

    def build(ema_decay: float | None = 0.5, **kwargs) -> ClassificationTask:
        torch.manual_seed(0)
        model = vit_config(embed_dim=16, num_heads=2)
        recipe = task_recipe("classification", ema_decay=ema_decay, **kwargs)
        return ClassificationTask(model, optimizer_config(lr=1e-2), **recipe)

    return build


@pytest.fixture
def trainer(tmp_path: Path, quiet_trainer) -> Callable[..., L.Trainer]:
    """``trainer(max_epochs, *callbacks)``: the best checkpoint by ``val/acc1`` and
    ``tmp_path/last.ckpt``."""

    def build(max_epochs: int, *callbacks: L.Callback) -> L.Trainer:
        return quiet_trainer(
            enable_checkpointing=True,
            default_root_dir=tmp_path,
            max_epochs=max_epochs,
            limit_train_batches=4,
            limit_val_batches=2,
            limit_test_batches=2,
            callbacks=[
                ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/acc1", mode="max"),
                ModelCheckpoint(dirpath=tmp_path, filename="last"),
                *callbacks,
            ],
        )

    return build


class Validations(L.Callback):
    """The model's and the average's validation accuracy of every epoch."""

    def __init__(self):
        self.scores: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.scores.append({name: metrics[name].item() for name in ("val/acc1", "val_ema/acc1")})


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


def test_checkpoints_hold_the_model_as_the_model_and_the_average_beside_it(
    tmp_path: Path, ema_task, trainer
):
    task = ema_task()
    trainer(1).fit(task, datamodule=DigitsDataModule(batch_size=8))
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    model = {n.removeprefix("model."): v for n, v in state.items() if n.startswith("model.")}
    average = {
        n.removeprefix("model_ema.module."): v
        for n, v in state.items()
        if n.startswith("model_ema.")
    }
    assert_same(model, weights(task.model))
    assert_same(average, weights(task.model_ema.module))
    assert any(not torch.equal(average[name], model[name]) for name in model)


def test_both_are_evaluated_and_the_best_checkpoint_follows_the_models_accuracy(
    ema_task, trainer, vit_config, optimizer_config, task_recipe
):
    data, validations = DigitsDataModule(batch_size=8), Validations()
    fitting = trainer(3, validations)
    task = ema_task()
    fitting.fit(task, datamodule=data)
    raw = [score["val/acc1"] for score in validations.scores]
    averaged = [score["val_ema/acc1"] for score in validations.scores]
    assert raw != averaged
    best = fitting.checkpoint_callbacks[0]
    assert best.best_model_score.item() == pytest.approx(max(raw))

    # the val_ema/ metrics are the average's: a plain model with its weights scores them
    plain = ClassificationTask(
        vit_config(embed_dim=16, num_heads=2), optimizer_config(), **task_recipe("classification")
    )
    plain.model.load_state_dict(task.model_ema.module.state_dict())
    (scores,) = fitting.validate(plain, datamodule=data, verbose=False)
    assert scores["val/acc1"] == pytest.approx(averaged[-1])

    tested = fitting.test(task, datamodule=data, ckpt_path=best.best_model_path, verbose=False)
    reloaded = ClassificationTask.load_from_checkpoint(best.best_model_path)
    assert fitting.test(reloaded, datamodule=data, verbose=False) == tested
    assert {"test/acc1", "test/loss", "test_ema/acc1", "test_ema/loss"} <= tested[0].keys()


def test_the_average_follows_every_optimizer_step(ema_task, trainer):
    task = ema_task(ema_decay=0.0)  # the average is then the model after each update
    trainer(1).fit(task, datamodule=DigitsDataModule(batch_size=8))
    assert_same(weights(task.model_ema.module), weights(task.model))


class StartingWeights(L.Callback):
    """The model's and the average's weights when training starts (after any restore)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.raw, self.averaged = weights(pl_module.model), weights(pl_module.model_ema.module)


def test_a_resumed_fit_continues_from_the_model_and_its_average(tmp_path: Path, ema_task, trainer):
    data = DigitsDataModule(batch_size=8)
    trainer(1).fit(ema_task(), datamodule=data)
    saved = ClassificationTask.load_from_checkpoint(tmp_path / "last.ckpt")

    start = StartingWeights()
    trainer(2, start).fit(ema_task(), datamodule=data, ckpt_path=tmp_path / "last.ckpt")
    assert_same(start.raw, weights(saved.model))
    assert_same(start.averaged, weights(saved.model_ema.module))


def test_fine_tuning_starts_the_average_at_the_loaded_model(
    tmp_path: Path, tiny_mae, tiny_vit, ema_task, quiet_trainer
):
    mae = tiny_mae(encoder=tiny_vit(embed_dim=16, num_heads=2))
    torch.save({"model": mae.state_dict()}, tmp_path / "mae.pth")
    task = ema_task(pretrained=str(tmp_path / "mae.pth"))
    start = StartingWeights()
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[start])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=8))
    assert_same(start.averaged, start.raw)
    assert torch.equal(start.raw["blocks.0.attn.qkv.weight"], mae.blocks[0].attn.qkv.weight)
