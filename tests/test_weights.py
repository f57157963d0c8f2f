"""``task.pretrained`` resolved once: refused in one line before any work when it can be no
weights for the task, and under data parallelism fetched by rank 0 while the other ranks wait,
every rank loading the same file."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vitlab import run
from vitlab.data.digits import DigitsDataModule
from vitlab.errors import UserError
from vitlab.tasks.base import build_task
from vitlab.tasks.classification import ClassificationTask
from vitlab.weights import on_rank_zero_first

FINETUNE = "experiment=digits_mae_finetune"
# the digits' encoder in the fine-tuning experiment (model=vit_digits): these weights fit it
ENCODER = dict(img_size=8, patch_size=2, in_chans=1, num_classes=10, depth=4, num_heads=4)


def refused(cfg: DictConfig, caplog: pytest.LogCaptureFixture) -> str:
    """The one line a training job on ``cfg`` ends with, as ``train.py`` runs it (exit code 2),
    having created neither its run directory nor a checkpoint folder."""
    with caplog.at_level(logging.ERROR, logger="vitlab.run"), pytest.raises(SystemExit) as exit:
        run.main(run.train, cfg)
    assert exit.value.code == 2
    assert not Path(cfg.paths.output_dir).exists()
    (line,) = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    return line


def test_a_file_that_is_no_checkpoint_is_refused_before_any_work(
    compose_config, caplog, tmp_path: Path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    cfg = compose_config(FINETUNE, f"task.pretrained={notes}")
    assert refused(cfg, caplog) == (
        f"error: task.pretrained: {notes} is not a PyTorch checkpoint (torch.save's zip format)"
    )


def test_weights_of_another_shape_are_refused_before_any_work(
    compose_config, tiny_vit, caplog, tmp_path: Path
):
    narrow = tmp_path / "narrow.pth"
    torch.save(tiny_vit(**ENCODER, embed_dim=32).state_dict(), narrow)
    cfg = compose_config(FINETUNE, f"task.pretrained={narrow}")
    line = refused(cfg, caplog)
    assert line.startswith(f"error: task.pretrained: {narrow} does not fit the model: ")
    assert "patch_embed.proj.weight (32, 1, 2, 2) for (64, 1, 2, 2)" in line
    assert line.endswith("of another shape; was it trained with another model (embed_dim, depth, patch_size, in_chans)?")  # fmt: skip


@pytest.fixture
def segmenter(trained_checkpoint, tmp_path: Path) -> Path:
    """A digits segmentation checkpoint: the wrong task for a classifier."""
    return trained_checkpoint(
        "experiment=digits_segmentation",
        "data.split_sizes={train:8,val:4,test:4}",
        "data.batch_size=4",
        f"paths.data_dir={tmp_path / 'data'}",
    )


def test_a_checkpoint_of_another_task_is_refused_naming_that_task(
    segmenter: Path, compose_config, caplog
):
    cfg = compose_config(FINETUNE, f"task.pretrained={segmenter}")
    line = refused(cfg, caplog)
    assert line.startswith(f"error: task.pretrained: {segmenter} does not fit the model: missing ")
    assert line.endswith("(a checkpoint of SegmentationTask)")


def test_resuming_a_checkpoint_of_another_task_names_the_tasks(
    segmenter: Path, compose_config, caplog
):
    cfg = compose_config(f"ckpt_path={segmenter}")
    assert refused(cfg, caplog) == (
        f"error: ckpt_path: {segmenter} is a checkpoint of SegmentationTask, but this run trains "
        "ClassificationTask: resume a run of the same task, or start from its weights with "
        f"task.pretrained={segmenter}"
    )


def test_a_task_that_loads_no_weights_says_so(compose_config):
    cfg = compose_config("experiment=digits_mae_pretrain", "+task.pretrained=encoder.pth")
    task = build_task(cfg.task)
    with pytest.raises(UserError, match=r"^task.pretrained: MAEPretrainTask loads no pretrained"):
        task.check_pretrained()


def test_checking_the_weights_loads_nothing(compose_config, tiny_vit, tmp_path: Path):
    path = tmp_path / "encoder.pth"
    torch.save(tiny_vit(**ENCODER, embed_dim=64).state_dict(), path)
    task = build_task(compose_config(FINETUNE, f"task.pretrained={path}").task)
    before = {name: tensor.clone() for name, tensor in task.state_dict().items()}
    task.check_pretrained()
    for name, tensor in task.state_dict().items():
        assert torch.equal(tensor, before[name]), name


# --- data parallelism: two real processes over gloo, forked -------------------------------------


def two_ranks(quiet_trainer, **kwargs) -> L.Trainer:
    """A trainer of two forked CPU processes over gloo, which give up after a minute of waiting
    for each other (a broken barrier fails the test instead of hanging it)."""
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    return quiet_trainer(devices=2, strategy=strategy, max_steps=1, **kwargs)


class FetchesInSetup(L.LightningModule):
    """Fetches a file in ``setup`` as a task does a W&B artifact, the fetch slow as a download
    and, given an ``error``, failing with it on rank 0 (only: another rank that fetched would
    get a file); writes what each rank got to ``<folder>/rank_<r>.json``."""

    def __init__(self, folder: Path, error: str | None = None):
        super().__init__()
        self.folder, self.error = folder, error
        self.weight = nn.Parameter(torch.zeros(()))

    def download(self) -> str:
        time.sleep(1)
        if self.error and self.global_rank == 0:
            raise UserError(self.error)
        path = self.folder / "artifact.ckpt"
        path.write_text(f"written by rank {self.global_rank}")
        return str(path)

    def setup(self, stage: str) -> None:
        try:
            path = on_rank_zero_first(self.download)
            got = {"path": path, "content": Path(path).read_text()}
        except UserError as error:
            got = {"error": str(error)}
        (self.folder / f"rank_{self.global_rank}.json").write_text(json.dumps(got))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=1)

    def training_step(self, batch, batch_idx):
        return self.weight * batch[0].sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def ranks_got(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank_{rank}.json").read_text()) for rank in (0, 1)]


def test_rank_zero_fetches_while_the_other_rank_waits_for_the_same_file(
    quiet_trainer, tmp_path: Path
):
    two_ranks(quiet_trainer).fit(FetchesInSetup(tmp_path))
    path = str(tmp_path / "artifact.ckpt")
    assert ranks_got(tmp_path) == [{"path": path, "content": "written by rank 0"}] * 2


def test_a_fetch_that_fails_on_rank_zero_fails_on_every_rank(quiet_trainer, tmp_path: Path):
    message = "task.pretrained: wandb:me/p/model:best: no such artifact"
    two_ranks(quiet_trainer).fit(FetchesInSetup(tmp_path, error=message))
    assert ranks_got(tmp_path) == [{"error": message}] * 2


class RecordEncoder(L.Callback):
    """Writes the encoder weights each rank starts training with to ``<folder>/rank_<r>.pt``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_start(self, trainer: L.Trainer, pl_module: ClassificationTask) -> None:
        state = {k: v for k, v in pl_module.model.state_dict().items() if k.startswith("blocks.")}
        torch.save(state, self.folder / f"rank_{trainer.global_rank}.pt")


def test_every_rank_starts_from_the_pretrained_weights(
    quiet_trainer, vit_config, optimizer_config, tiny_vit, task_recipe, tmp_path: Path
):
    encoder = tiny_vit()
    torch.save(encoder.state_dict(), tmp_path / "encoder.pth")
    recipe = task_recipe("classification", pretrained=str(tmp_path / "encoder.pth"))
    task = ClassificationTask(vit_config(), optimizer_config(), **recipe)
    trainer = two_ranks(quiet_trainer, callbacks=[RecordEncoder(tmp_path)], limit_val_batches=0)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=8))
    expected = {k: v for k, v in encoder.state_dict().items() if k.startswith("blocks.")}
    for rank in (0, 1):
        started = torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True)
        assert started.keys() == expected.keys()
        for name, tensor in started.items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
