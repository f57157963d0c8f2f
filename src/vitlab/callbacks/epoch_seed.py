"""Reseeding before the second start of an epoch's train iterator (see ``vitlab.data.epoch_seed``)."""

from __future__ import annotations

import lightning as L

from vitlab.data.epoch_seed import seed_epoch


class EpochSeed(L.Callback):
    """Reseeds (from the datamodule's ``epoch_seed``) before a reloaded epoch's second iterator.

    After reloading the train loader, Lightning starts its iterator (prefetching a batch), and
    in an uninterrupted run, unlike a resumed one, starts it once more at the epoch start. The
    epoch must be drawn from the freshly seeded state both times.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        if trainer.current_epoch > 0 and not loop.is_resuming and not loop.epoch_loop.restarting:
            seed_epoch(getattr(trainer.datamodule, "epoch_seed", None), trainer)
