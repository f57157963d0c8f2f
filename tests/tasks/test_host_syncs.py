"""The steady-state training step reads nothing from the device: no ``.item()``, ``bool()``,
``.tolist()`` or ``.cpu()`` between logging steps, in a run of each task's digits recipe built as
train.py builds it (its callbacks: checkpoints, lr monitor, throughput, the rich progress bar a
terminal gets, which draws every step; a logger). A non-finite loss is still caught, at the next
read, with its step named."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from vitlab.callbacks.progress import StepFreeRichProgressBar
from vitlab.run import build_run
from vitlab.tasks.base import build_task

HOST_READ_METHODS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}


class StepOfRead(L.Callback):
    """Which training batch (``trainer.fit_loop.total_batch_idx``) the loop is in, from its start
    to the next batch's start (the loss, backward, optimizer step, batch-end hooks, logging and
    the next fetch), and which batches are logging steps or an epoch's last; None outside
    training batches."""

    def __init__(self) -> None:
        self.batch: int | None = None
        self.logging_batches: set[int] = set()
        self.last_batches: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = trainer.fit_loop.total_batch_idx
        if trainer._logger_connector.should_update_logs:
            self.logging_batches.add(self.batch)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.last_batches.add(self.batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.batch = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.batch = None


class ReadBetweenLogs(AssertionError):
    """A device-to-host read in a training batch that neither logs nor ends an epoch."""


class HostReads(TorchDispatchMode):
    """Device-to-host reads: ``aten._local_scalar_dense`` (``item``, ``bool``, ``float``...). The
    batches that read are kept; a read in any other training batch raises ``ReadBetweenLogs``
    where it happens (its traceback shows the reader) and stops the run."""

    def __init__(self, where: StepOfRead) -> None:
        super().__init__()
        self.where, self.batches = where, set()

    def record(self, what: str) -> None:
        batch = self.where.batch
        if batch is None:
            return
        if batch not in self.where.logging_batches | self.where.last_batches:
            self.where.batch = None  # the run stops: Lightning's teardown is not a batch
            raise ReadBetweenLogs(f"{what} in training batch {batch}")
        self.batches.add(batch)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.record(str(func))
        return func(*args, **(kwargs or {}))


class HostCopies(TorchFunctionMode):
    """Whole-tensor reads that bypass the dispatcher on a CPU tensor: ``tolist``, ``numpy``,
    ``cpu``."""

    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READ_METHODS:
            self.reads.record(func.__name__)
        return func(*args, **(kwargs or {}))


def known_reads(reason: str) -> pytest.MarkDecorator:
    """A recipe whose training step still reads, and why: it must fail, and by such a read."""
    return pytest.mark.xfail(raises=ReadBetweenLogs, strict=True, reason=reason)


CANVAS_SPLITS = "data.split_sizes={train: 64, val: 16, test: 16}"
# each task's digits recipe (classification: train.py's default) and what makes it small here
RECIPES = [
    # the loader's random affine draws its parameters with .item(), in this process (no workers)
    pytest.param(None, ["data.augment=false"], id="classification"),
    pytest.param("digits_mae_pretrain", ["data.augment=false"], id="mae"),
    # multi-crop draws its crops with .item(): in a loader worker, as a real run's loader does
    pytest.param("digits_ibot", ["data.num_workers=1"], id="ibot"),
    pytest.param("digits_segmentation", [CANVAS_SPLITS], id="segmentation"),
    pytest.param(
        "digits_detection",
        [CANVAS_SPLITS],
        id="detection",
        marks=known_reads(
            "torchvision's FCOS reads in its training forward: GeneralizedRCNNTransform's "
            "torch_choice and scale .item() (resizing to the size the images have), "
            "degenerate_boxes.any() per image, num_foreground .item() in compute_loss"
        ),
    ),
]


@pytest.mark.parametrize(("experiment", "overrides"), RECIPES)
def test_training_steps_between_logging_steps_read_nothing_from_the_device(
    experiment: str | None, overrides: list[str], compose_config, tmp_path: Path, monkeypatch
):
    # an interactive terminal, as Rich sees it: the progress shown is its bar, redrawn every step
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    cfg = compose_config(
        *([f"experiment={experiment}"] if experiment else []),
        *overrides,
        f"paths.data_dir={tmp_path / 'data'}",  # the digit canvases are written there
        "logger=csv",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        "model.depth=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=3",
        "callbacks.throughput.window_size=2",
    )
    datamodule, task, trainer = build_run(cfg, None)
    assert isinstance(trainer.progress_bar_callback, StepFreeRichProgressBar)
    where = StepOfRead()
    trainer.callbacks.insert(0, where)
    reads = HostReads(where)
    with reads, HostCopies(reads):
        trainer.fit(task, datamodule=datamodule)

    assert (where.logging_batches, where.last_batches) == ({2, 5}, {3, 7})
    assert trainer.callback_metrics["train/loss"] > 0  # the logging steps did log
    assert "train/device/samples_per_sec" in trainer.logged_metrics
    # no other batch read (a read there raises); the logging steps did (the loss for the
    # progress bar, the non-finite verdict, the logs)
    assert reads.batches & where.logging_batches


class NanAtBatch(L.LightningDataModule):
    """Digits-sized random images, batch ``bad`` of 8 full of NaN."""

    batch_size = 4

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad = bad

    def train_dataloader(self) -> DataLoader:
        images = torch.randn(32, 1, 8, 8)
        images[4 * self.bad : 4 * self.bad + 4] = float("nan")
        return DataLoader(TensorDataset(images, torch.zeros(32, dtype=torch.long)), batch_size=4)


def test_a_nonfinite_loss_between_reads_stops_the_run_naming_its_step_and_saves_nothing(
    tmp_path: Path, compose_config, quiet_trainer
):
    task = build_task(compose_config("model.depth=1").task)
    checkpoints = tmp_path / "checkpoints"
    trainer = quiet_trainer(
        max_epochs=2,
        log_every_n_steps=6,
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=4)],
    )
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss nan at global step 2 \(epoch 0, batch 2\)"
    ):
        trainer.fit(task, datamodule=NanAtBatch(bad=2))
    # read before the checkpoint of step 4, which is not written
    assert trainer.global_step == 4
    assert not checkpoints.exists() or not list(checkpoints.iterdir())
