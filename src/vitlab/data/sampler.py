"""Repeated augmentation (Hoffer et al. 2020; DeiT's ``RASampler``) that shards across DDP ranks."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def distributed_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, or (0, 1) outside DDP."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RepeatedAugSampler(DistributedSampler):
    """Each epoch: shuffle, repeat every index ``repeats`` times, deal the list out to the ranks.

    The copies of one image land on different ranks (or, on one process, next to each other) and
    get different augmentations. An epoch keeps ``ceil(len(dataset) / world)`` samples per rank,
    so it costs what a plain epoch costs while showing ``1 / repeats`` of the distinct images.

    Subclassing ``DistributedSampler`` keeps Lightning from wrapping it in its own distributed
    sampler (it shards already); Lightning still calls ``set_epoch`` every epoch.
    """

    def __init__(
        self,
        dataset: Sized,
        repeats: int = 3,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ):
        default_rank, default_world = distributed_rank_and_world()
        num_replicas = default_world if num_replicas is None else num_replicas
        rank = default_rank if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.repeats = repeats
        self.num_repeated = math.ceil(len(dataset) * repeats / num_replicas)
        self.num_samples = math.ceil(len(dataset) / num_replicas)

    def shard(self) -> list[int]:
        """This rank's share of the repeated, shuffled indices for the current epoch."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        repeated = order.repeat_interleave(self.repeats).tolist()
        total = self.num_repeated * self.num_replicas
        repeated += repeated[: total - len(repeated)]
        return repeated[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples
