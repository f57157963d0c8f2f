"""Per-epoch seeding: one shuffle order for all ranks, sharded without overlap; augmentation
draws that differ per rank and repeat per (seed, epoch)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from vitlab.data.epoch_seed import SeededShuffle, seed_epoch


def trainer(rank: int, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, current_epoch=epoch)


def test_ranks_shard_one_order_into_disjoint_parts_that_cover_the_data():
    world = 4
    shards = []
    for rank in range(world):
        order = SeededShuffle(100, seed_epoch(7, trainer(rank)))
        # how Lightning shards a custom sampler under DDP
        shards.append(list(DistributedSamplerWrapper(order, num_replicas=world, rank=rank)))
    assert sorted(index for shard in shards for index in shard) == list(range(100))


def test_ranks_draw_different_augmentations_that_repeat_per_epoch():
    draws = {}
    for rank, epoch in [(0, 0), (1, 0), (0, 1), (0, 0)]:
        seed_epoch(7, trainer(rank, epoch))
        draws.setdefault((rank, epoch), []).append(torch.rand(3))
    first, again = draws[(0, 0)]
    assert torch.equal(first, again)
    assert not torch.equal(first, draws[(1, 0)][0])
    assert not torch.equal(first, draws[(0, 1)][0])


def test_epochs_reshuffle():
    orders = [list(SeededShuffle(50, seed_epoch(7, trainer(0, epoch)))) for epoch in (0, 1)]
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(50))


def test_no_seed_means_no_reseeding():
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    assert seed_epoch(None, trainer(0)) is None
    assert torch.equal(torch.rand(2), expected)
