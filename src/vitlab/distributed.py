"""Hydra + DDP: child ranks must join the job of rank 0, not start their own.

Lightning starts ranks > 0 by re-running ``sys.argv`` with ``hydra.run.dir=<HydraConfig
run.dir>`` appended. In a plain run that is right; in a multirun ``sys.argv`` holds the whole
sweep (each child would start it again and the job hangs) and ``run.dir`` is not the job's
directory. Before the trainer launches, point both at this job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import open_dict, read_write

# what Lightning's process launcher sets in the environment of rank 0
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def take_launcher_rank(devices_per_node: object) -> None:
    """Make ``rank_zero_only`` know this process's rank from the moment the job starts, when a
    cluster launcher gave it a node rank (``NODE_RANK`` or ``GROUP_RANK``) but no ``RANK``.

    Lightning reads ``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID`` when imported, and the node rank
    only once the Trainer is built; a process on another node would until then act as rank 0:
    check the run directory, create the logger's run id. Lightning sets the exact rank again
    when the Trainer is built; before that, any rank other than 0 is what matters
    (``devices_per_node`` other than an int counts as one).
    """
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK"))
    if node is None or "RANK" in os.environ:
        return
    per_node = devices_per_node if isinstance(devices_per_node, int) else 1
    rank_zero_only.rank = int(node) * per_node + int(os.environ.get("LOCAL_RANK", 0))


def pin_child_ranks_to_this_job() -> None:
    """Make Lightning's relaunch of ranks > 0 re-run exactly this job, in this job's directory."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    # the job's own overrides, without -m and the sweep (hydra.mode=RUN also when an option
    # such as hparams_search turned multirun on); child ranks report errors only (rank 0 prints
    # and writes the job's log)
    sys.argv = [
        sys.argv[0],
        *hydra_cfg.overrides.task,
        "hydra.mode=RUN",
        "hydra/job_logging=child_rank",
    ]


@contextmanager
def distributed_job() -> Iterator[None]:
    """Scope one job's distributed state, so the next job of a multirun starts afresh.

    Lightning leaves the process group alive and its launcher variables (``LOCAL_RANK`` among
    them) in ``os.environ``; the next job would then believe its ranks were started externally,
    spawn none, and wait for them forever.
    """
    saved = {name: os.environ.get(name) for name in LAUNCHER_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
