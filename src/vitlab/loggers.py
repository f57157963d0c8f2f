"""Experiment loggers from the ``logger`` config group, W&B set up the way sweeps need it.

W&B: offline unless credentials are found; every multirun job its own run (grouped by the
sweep, named by the job's overrides); the run id kept in the run directory, so a run resumed
in place continues the same W&B run.
"""

from __future__ import annotations

import itertools
import logging
import netrc
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id"


def instantiate_loggers(logger_cfg: Mapping[str, Any], run_dir: Path) -> list[Logger]:
    loggers = []
    for conf in logger_cfg.values():
        if not isinstance(conf, Mapping) or "_target_" not in conf:
            continue
        if conf._target_.endswith("WandbLogger"):
            complete_wandb_config(conf, run_dir)
        if conf._target_.endswith("CSVLogger"):
            keep_earlier_csv(conf)
        loggers.append(instantiate(conf))
    return loggers


def keep_earlier_csv(conf: DictConfig) -> None:
    """Lightning's CSV logger deletes a ``metrics.csv`` it finds in its folder: a run resumed in
    place moves the earlier part aside first (``metrics.0.csv``, ``metrics.1.csv``, ...)."""
    version = conf.get("version")
    if version is None or rank_zero_only.rank != 0:
        return  # a new version_N folder each time: nothing to lose
    folder = version if isinstance(version, str) else f"version_{version}"
    metrics = Path(conf.save_dir) / conf.get("name", "lightning_logs") / folder / "metrics.csv"
    if metrics.is_file():
        earlier = next(
            metrics.with_name(f"metrics.{index}.csv")
            for index in itertools.count()
            if not metrics.with_name(f"metrics.{index}.csv").exists()
        )
        metrics.rename(earlier)
        log.info("CSV logger: the earlier metrics of this run are kept in %s", earlier)


def complete_wandb_config(conf: DictConfig, run_dir: Path) -> None:
    """Fill the W&B settings left null: offline mode, run id, group and name."""
    with open_dict(conf):
        if conf.get("offline") is None:
            conf.offline = not wandb_credentials_found()
            if conf.offline:
                log.info(
                    "W&B: no credentials, logging offline; upload later with "
                    "`wandb sync %s/wandb/offline-run-*`",
                    run_dir,
                )
        conf.id = conf.get("id") or wandb_run_id(run_dir)
        conf.resume = conf.get("resume") or "allow"
        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if conf.get("group") is None and hydra_cfg.mode == RunMode.MULTIRUN:
                conf.group = Path(hydra_cfg.sweep.dir).name
            if conf.get("name") is None and hydra_cfg.job.override_dirname:
                conf.name = hydra_cfg.job.override_dirname


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory, created (by rank 0) on first use."""
    id_file = run_dir / WANDB_ID_FILE
    if id_file.is_file():
        return id_file.read_text().strip()
    run_id = secrets.token_hex(4)
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id)
    return run_id


def wandb_credentials_found() -> bool:
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def finish_loggers() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
