"""What a train.py checkpoint file holds besides the weights: the run config and class names.

A checkpoint is Lightning's dictionary. vitlab adds the resolved run config under
``RUN_CONFIG_KEY`` (plain containers, so ``torch.load(weights_only=True)`` reads it), keeps the
task's constructor arguments under ``hyper_parameters`` (so ``Task.load_from_checkpoint`` works),
and the DataModule's class names under the DataModule's class name (``NamedClasses``).
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from vitlab.errors import UserError

RUN_CONFIG_KEY = "run_config"


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint's contents (tensors memory-mapped, on the CPU, ``weights_only``); a file
    that is not a PyTorch checkpoint (text, truncated, another format) is a ``UserError``."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{key}: {path} is not a PyTorch checkpoint (torch.save's zip format)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises many types for files it cannot read
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{key}: {path} is not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{key}: {path} holds a {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def stored_config(checkpoint: dict[str, Any], path: str | os.PathLike) -> DictConfig:
    """The run config that train.py stored in a checkpoint read by ``read_checkpoint``."""
    run_config = checkpoint.get(RUN_CONFIG_KEY)
    if not run_config:
        raise UserError(f"ckpt_path: {path} holds no vitlab run config (not written by train.py?)")
    return OmegaConf.create(run_config)


def stored_class_names(checkpoint: dict[str, Any], datamodule_target: str) -> list[str] | None:
    """The class names that a ``NamedClasses`` DataModule of class ``datamodule_target`` saved."""
    state = checkpoint.get(get_class(datamodule_target).__qualname__) or {}
    return state.get("class_names")


def load_task(path: str | os.PathLike, run_config: DictConfig) -> L.LightningModule:
    """The trained task in a train.py checkpoint, on the CPU: its class from the run config, its
    constructor arguments and weights from the checkpoint (``load_from_checkpoint``)."""
    task_class = get_class(run_config.task._target_)
    return task_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
