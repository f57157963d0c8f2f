"""Progress: Lightning's rich bar on a terminal, log lines where the output goes to a file; both
show training values that cost no device read per step."""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from rich.console import Console
from torch import Tensor

log = logging.getLogger(__name__)


class StepFreeMetrics(ProgressBar):
    """Shows, beside the values Lightning gives every progress bar, a task's
    ``progress_bar_values``: training values read at logging steps (``RecipeTask.log_step``).

    A value logged to Lightning with ``prog_bar=True`` in a training step stays a device tensor in
    the step's results, which Lightning turns into a number (a device-to-host read that waits for
    the GPU) on every later step, for the bar and for its own bookkeeping.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return super().get_metrics(trainer, pl_module) | getattr(
            pl_module, "progress_bar_values", {}
        )


class StepFreeRichProgressBar(StepFreeMetrics, RichProgressBar):
    """Lightning's rich progress bar, with the task's step-free training values."""


class ProgressLog(StepFreeMetrics):
    """Progress as log lines, for output that is not an interactive terminal (a SLURM job's file,
    ``nohup``, CI), where a live bar prints nothing until the run ends: a line every ``every_s``
    seconds of training (epoch, batch, step, elapsed time, time left, the bar's values) and one
    per validation (its ``val/`` metrics). Lines go to the ``vitlab`` logger: the console and the
    run's log. Values are read from the device only when a line is written."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self.started = self.last_line = 0.0
        self.first_step = 0
        self.epoch_batches: float = math.inf

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = self.last_line = time.monotonic()
        self.first_step = trainer.global_step  # a resumed run times only its own steps

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # read once an epoch: under max_steps Lightning's count shrinks as the steps are taken
        self.epoch_batches = self.total_train_batches

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        if self.is_enabled and now - self.last_line >= self.every_s:
            self.last_line = now
            log.info(self.training_line(trainer, pl_module, batch_idx + 1, now - self.started))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_enabled and not trainer.sanity_checking:
            metrics = {
                name: value
                for name, value in sorted(trainer.callback_metrics.items())
                if name.startswith("val/") and value.numel() == 1
            }
            log.info(
                f"{_epoch(trainer)} validated at step {trainer.global_step}: {_shown(metrics)}"
            )

    def training_line(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: int, elapsed: float
    ) -> str:
        """``epoch 2/10 · batch 120/429 · step 549/4290 · 4:01 elapsed, 27:25 left · train/loss
        0.5231``; the time left is estimated from this run's steps so far."""
        step, steps = trainer.global_step, trainer.estimated_stepping_batches
        timing = f"{_clock(elapsed)} elapsed"
        if step > self.first_step and 0 < steps < math.inf:  # -1: a loader of unknown length
            timing += f", {_clock(elapsed / (step - self.first_step) * (steps - step))} left"
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        parts = (
            _epoch(trainer),
            f"batch {batch}{_out_of(self.epoch_batches)}",
            f"step {step}{_out_of(steps)}",
            timing,
            _shown(metrics),
        )
        return " · ".join(part for part in parts if part)


def _epoch(trainer: L.Trainer) -> str:
    return f"epoch {trainer.current_epoch + 1}{_out_of(trainer.max_epochs)}"


def _out_of(total: float | None) -> str:
    """``/429``, or nothing for an unknown (-1, None) or unbounded total."""
    return f"/{total}" if total is not None and 0 <= total < math.inf else ""


def _clock(seconds: float) -> str:
    """``1:02:03`` for 3723 seconds."""
    return str(timedelta(seconds=round(seconds)))


def _shown(metrics: dict[str, Any]) -> str:
    """``val/acc1 0.9133 · val/loss 0.3452``: numbers (floats or one-element tensors) to four
    significant digits."""
    return " · ".join(
        f"{name} {float(value):.4g}" if isinstance(value, float | Tensor) else f"{name} {value}"
        for name, value in metrics.items()
    )


def progress(every_s: float = 60.0) -> ProgressBar:
    """The rich bar where the output is an interactive terminal or a notebook, else
    ``ProgressLog``. Rich decides, as it does when it draws the bar: a tty that is not
    ``TERM=dumb``, or what ``TTY_COMPATIBLE`` / ``TTY_INTERACTIVE`` say."""
    console = Console()
    if console.is_interactive or console.is_jupyter:
        return StepFreeRichProgressBar()
    return ProgressLog(every_s)
