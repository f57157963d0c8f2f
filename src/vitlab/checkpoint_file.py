"""What a train.py checkpoint file holds besides the weights, and the trained run rebuilt from it.

A checkpoint is Lightning's dictionary. vitlab adds the resolved run config under
``RUN_CONFIG_KEY`` (plain containers, so ``torch.load(weights_only=True)`` reads it), keeps the
task's constructor arguments under ``hyper_parameters`` (so ``Task.load_from_checkpoint`` works),
and the DataModule's class names under the DataModule's class name (``NamedClasses``).
``load_run`` rebuilds the task, its DataModule and the class names from the file alone: what
eval.py, predict.py and the export start from.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from vitlab.errors import UserError

RUN_CONFIG_KEY = "run_config"


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint's contents (on the CPU, ``weights_only``; tensors memory-mapped from files in
    torch.save's zip format, older files read whole); a file that is not a PyTorch checkpoint
    (text, truncated, another format) is a ``UserError`` naming ``key``."""
    zipped = zipfile.is_zipfile(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as error:  # torch raises many types for files it cannot read
        if not zipped:
            raise UserError(
                f"{key}: {path} is not a PyTorch checkpoint (torch.save's zip format)"
            ) from None
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


@dataclass(frozen=True)
class TrainedRun:
    """A train.py run rebuilt from its checkpoint: ``task`` (of the class the run config names,
    its weights loaded, on the CPU), ``data`` (the run's DataModule, built from the stored config
    with any changes, no data read: its ``predict_transform`` prepares images), ``class_names``
    (one per class; the indices as text when the run stored none) and the run ``config``."""

    task: L.LightningModule
    data: L.LightningDataModule
    class_names: list[str]
    config: DictConfig

    @property
    def task_name(self) -> str:
        """The task's class, as the run config names it."""
        return self.config.task._target_


def load_run(
    path: str | os.PathLike,
    data_changes: Mapping[str, Any] | None = None,
    build_data: Callable[[DictConfig], L.LightningDataModule] = instantiate,
) -> TrainedRun:
    """The run that wrote the checkpoint at ``path``: its task rebuilt by Lightning
    (``load_from_checkpoint``), its DataModule by ``build_data`` from the stored data config
    merged with ``data_changes`` (e.g. the data's folder on this machine)."""
    checkpoint = read_checkpoint(path)
    config = stored_config(checkpoint, path)
    config.data = OmegaConf.merge(config.data, data_changes or {})
    task_class = get_class(config.task._target_)
    task = task_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    names = stored_class_names(checkpoint, config.data._target_)
    count = config.data.get("num_classes") or 0
    return TrainedRun(
        task=task,
        data=build_data(config.data),
        class_names=names or [str(index) for index in range(count)],
        config=config,
    )
