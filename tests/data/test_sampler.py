"""Repeated-augmentation sampler: repeats, sharding, epochs, and ranks from torch.distributed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from vitlab.data.sampler import RepeatedAugSampler


def shards(size: int, repeats: int, world: int, epoch: int = 0) -> list[list[int]]:
    samplers = [RepeatedAugSampler(range(size), repeats, world, rank) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [sampler.shard() for sampler in samplers]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_index_is_repeated_across_the_ranks(world: int):
    counts = Counter(index for shard in shards(12, 3, world) for index in shard)
    assert set(counts) == set(range(12)) and set(counts.values()) == {3}


def test_without_repeats_rank_shards_are_disjoint_and_cover_the_data():
    parts = [set(shard) for shard in shards(12, 1, 3)]
    assert set().union(*parts) == set(range(12))
    assert sum(map(len, parts)) == 12


def test_copies_of_an_image_go_to_different_ranks():
    # three ranks, three repeats: every rank sees the same images, each with its own augmentation
    parts = shards(12, 3, 3)
    assert parts[0] == parts[1] == parts[2]
    assert len(set(parts[0])) == 12


def test_one_process_sees_the_copies_side_by_side_and_keeps_the_epoch_length():
    sampler = RepeatedAugSampler(range(12), repeats=3, num_replicas=1, rank=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 12
    assert [order[i] for i in range(0, 12, 3)] == order[1::3] == order[2::3]


def test_epochs_reshuffle_and_seeds_reproduce():
    assert shards(12, 3, 2, epoch=0) == shards(12, 3, 2, epoch=0)
    assert shards(12, 3, 2, epoch=0) != shards(12, 3, 2, epoch=1)


def test_lightning_keeps_it_because_it_is_a_distributed_sampler():
    sampler = RepeatedAugSampler(range(10))
    assert isinstance(sampler, DistributedSampler)
    assert (sampler.rank, sampler.num_replicas) == (0, 1)


def _record_shard(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sampler = RepeatedAugSampler(range(10), repeats=3)
        torch.save((sampler.rank, sampler.num_replicas, sampler.shard()), f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_rank_and_world_size_come_from_the_process_group(tmp_path: Path):
    mp.spawn(_record_shard, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    records = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    assert [(rank, world) for rank, world, _ in records] == [(0, 2), (1, 2)]
    assert [shard for *_, shard in records] == shards(10, 3, 2)
