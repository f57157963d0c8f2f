"""The private internals of Lightning and W&B that vitlab.compat wraps still exist and behave
as assumed on the installed versions (a release that changes one fails here)."""

from __future__ import annotations

import lightning as L
import torch
import wandb

from vitlab import compat
from vitlab.loggers import WandbLogger, records


class Recorder(L.Callback):
    """What compat reports at each training batch's end."""

    def __init__(self):
        self.seen: list[tuple[int, bool, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((
            batch_idx,
            compat.should_accumulate(trainer),
            compat.should_update_logs(trainer),
        ))  # fmt: skip


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_says_which_batches_accumulate_and_which_steps_log(quiet_trainer, tmp_path):
    recorder = Recorder()
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        max_epochs=1,
        accumulate_grad_batches=2,
        log_every_n_steps=2,
        callbacks=[recorder],
    )
    trainer.fit(Tiny())
    # batches 1, 3, 5, 7 step the optimizer; steps 2 and 4 (batches 3 and 7) are logging steps
    accumulating = [index for index, accumulates, _ in recorder.seen if accumulates]
    logging_steps = [
        index for index, accumulates, logs in recorder.seen if logs and not accumulates
    ]
    assert accumulating == [0, 2, 4, 6]
    assert logging_steps == [3, 7]


def test_lightning_passes_the_wandb_init_arguments_vitlab_edits(tmp_path):
    logger = WandbLogger(offline=True, save_dir=tmp_path, project="vitlab", name="compat")
    init = compat.wandb_init_arguments(logger)
    assert init["mode"] == "offline" and init["name"] == "compat" and "anonymous" not in init
    run = logger.experiment
    assert run.name == "compat" and run.settings.mode == "offline"
    wandb.finish()
    wandb.teardown()
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    kinds = {record.WhichOneof("record_type") for record in records(run_file)}
    assert {"run", "exit"} <= kinds


def test_wandb_credentials_search_answers_without_warning(monkeypatch, tmp_path, caplog):
    """A home without credentials: not found, and no warning that the search changed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compat.wandb_credentials_found() is False
    assert "credentials search changed" not in caplog.text
