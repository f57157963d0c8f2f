"""LitData shards (``vitlab-pack --format shards``, ``data=imagenet_shards``): packed from a
real image tree, read whole once per epoch, the images of the packed image-folder copy, one
disjoint share per DDP rank, and a run resumed from a mid-epoch checkpoint streams on exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from vitlab.data import pack
from vitlab.data.imagefolder import ImageFolderDataModule
from vitlab.data.shards import ShardsDataModule
from vitlab.data.synthetic import write_image_tree
from vitlab.errors import UserError
from vitlab.run import build_run, prepare

SIDE, IMG = 36, 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of 3 classes x (8 train, 2 val) real images, with one unreadable file and class
    names, packed into shards by the command."""
    folder = tmp_path_factory.mktemp("shards")
    written = write_image_tree(folder / "tree", {"train": 8, "val": 2}, size=(60, 45))
    (folder / "tree" / "train" / "class_0" / "broken.JPEG").write_bytes(
        written[0].read_bytes()[:200]
    )
    (folder / "tree" / "LOC_synset_mapping.txt").write_text("class_0 zero\nclass_1 one\n")
    arguments = ["--format", "shards", "--short-side", str(SIDE), "--workers", "1"]
    pack.main([str(folder / "tree"), str(folder / "shards"), *arguments])
    return folder / "shards"


def shard_data(root: Path, **changes) -> ShardsDataModule:
    settings = dict(img_size=IMG, num_classes=None, batch_size=4, num_workers=0, augment=False)
    datamodule = ShardsDataModule(str(root), **(settings | changes))
    datamodule.setup()
    return datamodule


def sample_ids(images: torch.Tensor) -> list[int]:
    """Each image's pixel sum: an identity for these random images."""
    return images.flatten(1).to(torch.int64).sum(1).tolist()


def test_packed_shards_hold_every_readable_image_once_with_class_names(shards: Path, capsys):
    summary = json.loads((shards / "pack.json").read_text())
    assert summary["images"] == 30 and len(summary["unreadable"]) == 1
    assert "broken.JPEG" in capsys.readouterr().out or summary["unreadable"][0].count("broken")
    datamodule = shard_data(shards)
    assert datamodule.class_names == ["zero", "one", "class_2"] and datamodule.num_classes == 3
    assert datamodule.dataset_sizes() == {"train": 24, "val": 6, "test": 6}
    for epoch in range(2):
        datamodule.trainer = type("Epoch", (), {"current_epoch": epoch, "global_rank": 0})()
        batches = list(datamodule.train_dataloader())
        epoch_ids = [i for images, _ in batches for i in sample_ids(images)]
        labels = Counter(label for _, targets in batches for label in targets.tolist())
        assert len(epoch_ids) == len(set(epoch_ids)) == 24 and labels == {0: 8, 1: 8, 2: 8}
        in_order = [
            i for images, _ in datamodule.train_eval_dataloader() for i in sample_ids(images)
        ]
        assert sorted(epoch_ids) == sorted(in_order) and epoch_ids != in_order


def test_a_rank_of_a_launched_run_reads_all_classes_and_whole_split_sizes(shards, monkeypatch):
    # what Lightning's DDP launcher sets in a child rank before train.py reads the data
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("GLOBAL_RANK", "1")
    datamodule = shard_data(shards)
    assert datamodule.class_names == ["zero", "one", "class_2"]
    assert datamodule.dataset_sizes() == {"train": 24, "val": 6, "test": 6}


def test_a_root_without_shards_is_one_line_naming_the_command_that_writes_them(tmp_path: Path):
    with pytest.raises(UserError) as error:
        prepare(ShardsDataModule(str(tmp_path), img_size=IMG))
    assert str(error.value).startswith(f"data: imagenet_shards: no shards at {tmp_path}/meta")
    assert "vitlab-pack <tree> <dest> --format shards" in str(error.value)


def test_shard_images_are_those_of_the_packed_image_folder(shards: Path, tmp_path: Path):
    tree = tmp_path / "tree"
    write_image_tree(tree, {"train": 8, "val": 2}, size=(60, 45))
    pack.pack(tree, tmp_path / "packed", short_side=SIDE, workers=1)
    folder = ImageFolderDataModule(tmp_path / "packed", img_size=IMG, num_workers=0, batch_size=4)
    folder.setup()
    streamed = [image for images, _ in shard_data(shards).val_dataloader() for image in images]
    read = [image for images, _ in folder.val_dataloader() for image in images]
    assert len(streamed) == len(read) == 6
    for a, b in zip(streamed, read, strict=True):
        torch.testing.assert_close(a, b)


def test_train_py_builds_and_fits_the_shard_config(shards: Path, compose_config):
    cfg = compose_config(
        "experiment=none",
        "data=imagenet_shards",
        f"data.root={shards}",
        *("data.num_classes=3", "data.batch_size=4", "data.num_workers=0"),
        *("model.img_size=32", "model.patch_size=8", "trainer=cpu", "logger=none"),
        *("callbacks=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2"),
        "trainer.limit_val_batches=1",
    )
    datamodule, task, trainer = build_run(cfg, None)
    trainer.fit(task, datamodule=datamodule)
    assert trainer.global_step == 2 and "val/acc1" in trainer.callback_metrics
    assert datamodule.state_dict() == {"class_names": ["zero", "one", "class_2"]}


class RecordSamples(L.LightningModule):
    """A linear classifier that records the ids of the samples it trains on, per epoch."""

    def __init__(self, folder: Path | None = None):
        super().__init__()
        self.folder, self.seen = folder, {}
        self.head = nn.Linear(3 * IMG * IMG, 3)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.seen.setdefault(self.current_epoch, []).extend(sample_ids(images * 1000))
        return nn.functional.cross_entropy(self.head(images.flatten(1)), targets)

    def on_train_end(self):
        if self.folder is not None:
            (self.folder / f"rank_{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Killed(Exception):
    pass


class StopAt(L.Callback):
    """Kills the run (an exception) after global step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Killed


def fit(quiet_trainer, module, shards, ckpt_path=None, **kwargs) -> None:
    trainer = quiet_trainer(
        max_epochs=2, limit_val_batches=0, reload_dataloaders_every_n_epochs=1, **kwargs
    )
    trainer.fit(module, datamodule=shard_data(shards, epoch_seed=5), ckpt_path=ckpt_path)


def test_a_run_resumed_mid_epoch_streams_on_from_where_it_stopped(shards, quiet_trainer, tmp_path):
    torch.manual_seed(0)
    uninterrupted = RecordSamples()
    fit(quiet_trainer, uninterrupted, shards)
    # 6 batches an epoch: a checkpoint after step 8 (mid-epoch 1), then the kill after step 9
    checkpoint = ModelCheckpoint(tmp_path, "mid", every_n_train_steps=8, save_top_k=-1)
    torch.manual_seed(0)
    interrupted = RecordSamples()
    with pytest.raises(Killed):
        fit(
            quiet_trainer,
            interrupted,
            shards,
            callbacks=[checkpoint, StopAt(9)],
            enable_checkpointing=True,
        )
    # Lightning saved the stream's position: LitData's StreamingDataLoader.state_dict()
    loops = torch.load(tmp_path / "mid.ckpt", weights_only=True)["loops"]
    (position,) = loops["fit_loop"]["state_dict"]["combined_loader"]
    assert position["num_samples_yielded"] == 2 * 4
    resumed = RecordSamples()
    torch.manual_seed(1)  # the head's initialisation comes from the checkpoint
    fit(quiet_trainer, resumed, shards, ckpt_path=tmp_path / "mid.ckpt")

    assert interrupted.seen[0] == uninterrupted.seen[0]
    assert interrupted.seen[1][:8] + resumed.seen[1] == uninterrupted.seen[1]
    for a, b in zip(uninterrupted.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_two_ranks_read_each_sample_exactly_once_per_epoch(
    shards: Path, quiet_trainer, tmp_path: Path
):
    trainer = quiet_trainer(
        devices=2,
        # two real processes over gloo, forked: no second start of Python and its imports
        strategy="ddp_fork",
        max_epochs=2,
        limit_val_batches=0,
        reload_dataloaders_every_n_epochs=1,
    )
    trainer.fit(RecordSamples(tmp_path), datamodule=shard_data(shards, epoch_seed=5))
    ranks = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    datamodule = shard_data(shards)
    batches = [datamodule.on_after_batch_transfer(b, 0) for b in datamodule.train_eval_dataloader()]
    everything = sorted(i for images, _ in batches for i in sample_ids(images * 1000))
    for epoch in ("0", "1"):
        first, second = ranks[0][epoch], ranks[1][epoch]
        assert len(first) == len(second) == 12
        assert sorted(first + second) == everything
    assert ranks[0]["0"] != ranks[0]["1"]  # a new order each epoch
