"""Lightning's rich progress bar, showing training values that cost no device read per step."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class StepFreeRichProgressBar(RichProgressBar):
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
