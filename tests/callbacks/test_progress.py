"""Progress where the output goes: Lightning's rich bar on a terminal, and where it goes to a file
(where a live bar prints nothing until the run ends), log lines a real Trainer's fit writes: one
per ``every_s`` of training and one per validation, with the values the bar would show."""

from __future__ import annotations

import logging
import re

import pytest

from vitlab.callbacks.progress import (
    ProgressLog,
    StepFreeRichProgressBar,
    clock,
    progress_bar,
    shown,
)
from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.classification import ClassificationTask


@pytest.mark.parametrize(("tty", "bar"), [("1", StepFreeRichProgressBar), ("0", ProgressLog)])
def test_a_terminal_gets_the_rich_bar_and_a_file_gets_log_lines(tty, bar, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", tty)  # what Rich reads before it asks isatty()
    assert type(progress_bar(every_s=5)) is bar


def test_times_and_values_read_as_printed():
    assert clock(3723.4) == "1:02:03"
    assert shown({"train/loss": 0.523149, "v": 3}) == "train/loss 0.5231 · v 3"


def test_a_fit_logs_its_steps_time_left_and_each_validation(
    vit_config, optimizer_config, task_recipe, quiet_trainer, caplog, monkeypatch
):
    # an in-process Hydra run of another test may have stopped vitlab's loggers propagating
    monkeypatch.setattr(logging.getLogger("vitlab"), "propagate", True)
    task = ClassificationTask(vit_config(), optimizer_config(), **task_recipe("classification"))
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=True,
        callbacks=[ProgressLog(every_s=0)],  # a line after every step
    )
    with caplog.at_level(logging.INFO, logger="vitlab.callbacks.progress"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    lines = [r.getMessage() for r in caplog.records if r.name == "vitlab.callbacks.progress"]
    steps = [line for line in lines if " validated: " not in line]
    assert [line.split(" · ")[:3] for line in steps] == [
        [f"epoch {epoch}/2", f"batch {batch}/3", f"step {3 * (epoch - 1) + batch}/6"]
        for epoch in (1, 2)
        for batch in (1, 2, 3)
    ]
    assert all(re.search(r" · 0:00:\d\d elapsed, 0:\d\d:\d\d left · ", line) for line in steps)
    # the loss the task read at its logging step, as the bar shows it
    assert re.search(r"train/loss \d\.\d+$", steps[-1])
    validated = [line for line in lines if " validated: " in line]
    assert len(validated) == 2  # the sanity check is not reported
    acc1 = trainer.callback_metrics["val/acc1"].item()
    assert validated[-1].startswith("epoch 2/2 validated: val/acc1 ")
    assert f"val/acc1 {acc1:.4g}" in validated[-1]


def test_nothing_is_logged_by_a_disabled_bar(
    vit_config, optimizer_config, task_recipe, quiet_trainer, caplog, monkeypatch
):
    """Lightning disables the bar on ranks other than 0 and while it tunes."""
    monkeypatch.setattr(logging.getLogger("vitlab"), "propagate", True)
    task = ClassificationTask(vit_config(), optimizer_config(), **task_recipe("classification"))
    bar = ProgressLog(every_s=0)
    bar.disable()
    trainer = quiet_trainer(
        max_steps=2, limit_val_batches=1, enable_progress_bar=True, callbacks=[bar]
    )
    with caplog.at_level(logging.INFO, logger="vitlab.callbacks.progress"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    assert not [r for r in caplog.records if r.name == "vitlab.callbacks.progress"]
