"""vitlab's W&B logger on real offline runs read back from disk."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
from wandb_records import run_contents

from vitlab.data.digits import DigitsDataModule
from vitlab.loggers import WandbLogger, finish_loggers
from vitlab.tasks.classification import ClassificationTask


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """W&B as a new user has it (no WANDB_* variables, a home of its own); the run finished."""
    for name in [name for name in os.environ if name.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield
    finish_wandb()


def finish_wandb() -> None:
    """Finish the W&B run and wait for its files: ``wandb.finish`` returns before wandb-core
    has written them, ``wandb.teardown`` stops wandb-core."""
    finish_loggers()
    wandb.teardown()


def run_files(save_dir: Path) -> list[Path]:
    """The run's segments, oldest first."""
    return sorted(save_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_log_model_offline_is_turned_off_with_one_warning(
    offline_wandb, tmp_path, caplog, vit_config, optimizer_config, quiet_trainer
):
    with caplog.at_level(logging.WARNING, logger="vitlab"):
        logger = WandbLogger(offline=True, log_model=True, save_dir=tmp_path, project="vitlab")
    assert [record.getMessage() for record in caplog.records] == [
        "W&B: log_model=True is turned off: this run logs offline, and checkpoints are only "
        "uploaded online"
    ]
    trainer = quiet_trainer(
        logger=logger,
        enable_checkpointing=True,
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    task = ClassificationTask(vit_config(), optimizer_config())
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=8))
    finish_wandb()
    (run_file,) = run_files(tmp_path)
    assert any("val/acc1" in row for row in run_contents(run_file)["history"])
