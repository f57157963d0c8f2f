"""Progress where the output goes: Lightning's rich bar on a terminal, and where it goes to a file
(where a live bar prints nothing until the run ends), log lines a real Trainer's fit writes: one
per ``every_s`` of training and one per validation, with the values the bar would show."""

from __future__ import annotations

import logging
import re

import lightning as L
import pytest

from vitlab.callbacks.progress import ProgressLog, StepFreeRichProgressBar, progress
from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.classification import ClassificationTask

LOGGER = "vitlab.callbacks.progress"


@pytest.mark.parametrize(
    ("tty", "term", "shown_by"),
    [
        ("1", "xterm", StepFreeRichProgressBar),
        ("1", "dumb", ProgressLog),  # a terminal the bar cannot redraw
        ("0", "xterm", ProgressLog),  # a file or a pipe
    ],
)
def test_an_interactive_terminal_gets_the_rich_bar_and_a_file_gets_log_lines(
    tty, term, shown_by, monkeypatch
):
    # what Rich reads before it asks isatty(), as it does when it draws the bar
    monkeypatch.setenv("TTY_COMPATIBLE", tty)
    monkeypatch.setenv("TERM", term)
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    assert type(progress(every_s=5)) is shown_by


@pytest.fixture
def logged_fit(vit_config, optimizer_config, task_recipe, quiet_trainer, caplog, monkeypatch):
    """``logged_fit(shown_by, **trainer_arguments)``: a tiny digits ViT fitted (16-image batches,
    one validation batch) with that progress display; the trainer and the lines it logged."""
    # an in-process Hydra run of another test may have stopped vitlab's loggers propagating
    monkeypatch.setattr(logging.getLogger("vitlab"), "propagate", True)

    def fit(shown_by: ProgressLog, **arguments) -> tuple[L.Trainer, list[str]]:
        recipe = task_recipe("classification")
        task = ClassificationTask(vit_config(), optimizer_config(), **recipe)
        trainer = quiet_trainer(
            limit_val_batches=1,
            log_every_n_steps=1,
            enable_progress_bar=True,
            callbacks=[shown_by],
            **arguments,
        )
        with caplog.at_level(logging.INFO, logger="vitlab.callbacks.progress"):
            trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
        return trainer, [r.getMessage() for r in caplog.records if r.name == LOGGER]

    return fit


def test_a_fit_logs_its_steps_time_left_and_each_validation(logged_fit):
    # every_s=0: a line after every step
    trainer, lines = logged_fit(ProgressLog(every_s=0), max_epochs=2, limit_train_batches=3)
    steps = [line for line in lines if " validated " not in line]
    assert [line.split(" · ")[:3] for line in steps] == [
        [f"epoch {epoch}/2", f"batch {batch}/3", f"step {3 * (epoch - 1) + batch}/6"]
        for epoch in (1, 2)
        for batch in (1, 2, 3)
    ]
    assert all(re.search(r" · 0:00:\d\d elapsed, 0:\d\d:\d\d left · ", line) for line in steps)
    # the loss the task read at its logging step, as the bar shows it
    assert re.search(r"train/loss \d\.\d+$", steps[-1])
    validated = [line for line in lines if " validated " in line]
    assert len(validated) == 2  # the sanity check is not reported
    acc1 = trainer.callback_metrics["val/acc1"].item()
    assert validated[-1].startswith("epoch 2/2 validated at step 6: val/acc1 ")
    assert f"val/acc1 {acc1:.4g}" in validated[-1]


def test_lines_are_every_s_apart(logged_fit):
    _, lines = logged_fit(ProgressLog(every_s=3600), max_epochs=2, limit_train_batches=3)
    assert [line.split(":")[0] for line in lines] == [
        "epoch 1/2 validated at step 3",
        "epoch 2/2 validated at step 6",
    ]


def test_a_step_budget_counts_the_batches_an_epoch_will_run(logged_fit):
    """Under ``max_steps`` Lightning's batch count is the steps left, which shrinks as they are
    taken: an epoch's lines keep the count it started with."""
    _, lines = logged_fit(ProgressLog(every_s=0), max_epochs=-1, max_steps=5, limit_train_batches=3)
    steps = [line.split(" · ")[:3] for line in lines if " validated " not in line]
    assert steps[-3:] == [
        ["epoch 1", "batch 3/3", "step 3/5"],
        ["epoch 2", "batch 1/2", "step 4/5"],
        ["epoch 2", "batch 2/2", "step 5/5"],
    ]


def test_nothing_is_logged_by_a_disabled_bar(logged_fit):
    """Lightning disables the bar on ranks other than 0 and while it tunes."""
    shown_by = ProgressLog(every_s=0)
    shown_by.disable()
    _, lines = logged_fit(shown_by, max_steps=2)
    assert shown_by.is_disabled and lines == []
