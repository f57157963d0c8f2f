"""Exponential moving average of the weights, as Lightning keeps it, with checkpoints that
evaluate the same wherever they are loaded."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``: validation and every saved checkpoint's
    ``state_dict`` carry the averaged weights, the raw ones ride along for resuming.

    Lightning restores the raw weights whenever this callback sees a checkpoint load, so
    ``trainer.test(ckpt_path=best)`` after fitting would test the raw weights while ``eval.py``
    tests the averaged ones; here only a fit (a resumed run) restores them.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            # vitlab's configure_model only compiles; there are no sharded layers to miss
            warnings.filterwarnings("ignore", ".*model that overrides the configure_model.*")
            super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
