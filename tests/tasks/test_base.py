import csv
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from quiet_trainer import quiet_trainer

from vitlab.data.digits import DigitsDataModule
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.classification import ClassificationTask


class RecordLoss(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def digits_task() -> ClassificationTask:
    model = VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2
    )
    return ClassificationTask(model, functools.partial(torch.optim.AdamW, lr=1e-3))


def test_step_values_are_logged_on_logging_steps_only(tmp_path: Path, monkeypatch):
    task = digits_task()
    logged_steps = []
    log = task.log

    def counting_log(name, value, *args, **kwargs):
        if name == "train/loss":
            logged_steps.append(task.global_step)
        log(name, value, *args, **kwargs)

    monkeypatch.setattr(task, "log", counting_log)
    record = RecordLoss()
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=7,
        limit_val_batches=0,
        log_every_n_steps=3,
        callbacks=[record],
        logger=CSVLogger(tmp_path, name="csv"),
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))

    # Lightning writes steps 3 and 6 (global steps 2 and 5): self.log ran for those alone
    assert logged_steps == [2, 5]
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    losses = {int(row["step"]): float(row["train/loss"]) for row in rows if row["train/loss"]}
    assert losses == {2: pytest.approx(record.losses[2]), 5: pytest.approx(record.losses[5])}
    assert trainer.progress_bar_metrics["train/loss"] == pytest.approx(record.losses[5])
