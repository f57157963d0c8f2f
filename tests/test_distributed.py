"""Two real CPU processes (DDP over gloo) share one seeded order per epoch: each rank trains on its
own shard, the shards are disjoint, cover the data, and follow the order the seed fixes."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch import nn
from torch.utils.data import Dataset

from vitlab.data.base import SplitsDataModule
from vitlab.data.digits import TensorImages
from vitlab.data.epoch_seed import SeededShuffle, seed_epoch

SIZE, BATCH, EPOCHS, SEED = 32, 4, 2, 7


class IndexedImages(SplitsDataModule):
    """``SIZE`` blank 1x2x2 images whose targets are their own indices."""

    def __init__(self):
        super().__init__(
            img_size=2,
            in_chans=1,
            mean=[0.0],
            std=[1.0],
            num_classes=SIZE,
            batch_size=BATCH,
            epoch_seed=SEED,
        )

    def build_splits(self) -> dict[str, Dataset]:
        images, indices = torch.zeros(SIZE, 1, 2, 2), torch.arange(SIZE)
        identity = TensorImages(images, indices, lambda image: image)
        return {"train": identity, "val": identity, "test": identity}


class RecordIndices(L.LightningModule):
    """Writes the indices each rank trains on, per epoch, to ``<folder>/rank_<r>.json``."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder, self.seen = folder, {}
        self.weight = nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch[1].tolist())
        return (self.weight * batch[0].sum()) ** 2

    def on_train_end(self):
        path = self.folder / f"rank_{self.global_rank}.json"
        path.write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_ranks_train_on_disjoint_shards_of_one_seeded_order(tmp_path: Path):
    # seeded as train.py seeds a run: the processes inherit PL_GLOBAL_SEED, which also seeds
    # Lightning's distributed sampler (whatever an earlier test in this process seeded)
    L.seed_everything(SEED, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=EPOCHS,
        reload_dataloaders_every_n_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(RecordIndices(tmp_path), datamodule=IndexedImages())
    ranks = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in range(EPOCHS):
        shards = [rank[str(epoch)] for rank in ranks]
        assert set(shards[0]).isdisjoint(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(SIZE))
        assert shards == [expected_shard(epoch, rank) for rank in (0, 1)]


def expected_shard(epoch: int, rank: int) -> list[int]:
    """What the seeds fix for ``rank``: the epoch's seeded order, which Lightning's distributed
    wrapper permutes once more (the same way on every rank, seeded by the run's seed) and deals
    out to the ranks."""
    epoch_trainer = type("Epoch", (), {"current_epoch": epoch, "global_rank": rank})()
    order = SeededShuffle(SIZE, seed_epoch(SEED, epoch_trainer))
    shard = DistributedSamplerWrapper(order, num_replicas=2, rank=rank, shuffle=True, seed=SEED)
    shard.set_epoch(epoch)
    return [int(index) for index in shard]
