"""Training throughput without a host sync on every step: what Lightning's ThroughputMonitor
counts in vitlab's runs (the images of a batch, the FLOPs of a training step from the task's
``RecipeTask.training_flops``), measured at logging steps only; validation and test rows are
logged at the trainer's global step, as every other row."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_only

from vitlab.compat import should_accumulate, should_update_logs


def images_in(batch: tuple[Any, ...]) -> int:
    """The images of an ``(images, targets)`` batch; of a multi-crop batch (``images`` a list
    of views, each a tensor of the same images), the images, not the views."""
    images = batch[0]
    return len(images[0] if isinstance(images, list | tuple) else images)


class LoggingStepThroughputMonitor(ThroughputMonitor):
    """Lightning's ThroughputMonitor, which on CUDA synchronizes the device after every training
    batch to time it; this one counts every batch but takes the time (and synchronizes) only at
    the steps whose values are logged, so ``window_size`` counts logging steps. The rate over a
    window is the same: images and FLOPs of the batches between its first and last logging step
    over the time between them.
    """

    def __init__(self, batch_size_fn: Any, **kwargs: Any) -> None:
        super().__init__(batch_size_fn, **kwargs)
        self._batches_timed = 0

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._batches_timed = 0

    @rank_zero_only  # as Lightning's
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        stage = trainer.state.stage
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        if should_accumulate(trainer) or not should_update_logs(trainer):
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the batches queued so far have run
        batches = self._batches[stage]
        flops = getattr(pl_module, "flops_per_batch", None)
        self._throughputs[stage].update(
            time=time.perf_counter() - self._t0s[stage],
            batches=batches,
            samples=self._samples[stage],
            flops=None if flops is None else flops * (batches - self._batches_timed),
        )
        self._batches_timed = batches
        self._compute(trainer)

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        """Lightning logs validation and test throughput at the evaluation loop's batch count,
        which loggers plot as the training step: W&B and CSV rows at step 3 of an epoch at step
        500, and a resumed W&B run that skips the steps it holds would drop them. Every row is
        logged at the trainer's global step here."""
        super()._compute(trainer)
