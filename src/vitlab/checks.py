"""Checks run before any heavy work, each failing with a one-line ``UserError``."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from vitlab.models.vit import patch_grid

NUMBER = re.compile(r"\b(float|int)\b")


class UserError(Exception):
    """Bad input the user can fix: reported as one line and exit code 2, before any training."""


def check_model(model_cfg: DictConfig) -> None:
    """Architecture checks that would otherwise fail deep inside instantiation."""
    try:
        patch_grid(model_cfg.img_size, model_cfg.patch_size)
    except ValueError as error:
        raise UserError(f"model: {error}") from None


def check_argument_types(cfg: DictConfig) -> None:
    """Every config value passed to a number-typed constructor argument must be a number.

    Checked against the signatures of the ``_target_`` callables, so ``task.optimizer.lr=abc``
    is refused at start instead of when the optimizer is first built. A value that came through
    an interpolation is reported under the key it was given at (``seed``, not the
    ``data.epoch_seed: ${seed}`` that received it).
    """
    for key in ("seed", "num_threads"):
        if not isinstance(cfg.get(key), int | None):
            raise UserError(f"{key}: expected an integer, got {cfg.get(key)!r}")
    for path, node in targets(cfg):
        try:
            parameters = inspect.signature(get_object(node._target_)).parameters
        except (ImportError, AttributeError, TypeError, ValueError):
            continue
        for key, param in parameters.items():
            if key not in node or param.annotation is inspect.Parameter.empty:
                continue
            annotation = str(param.annotation)
            value = node[key]
            expects_number = NUMBER.search(annotation) and "str" not in annotation
            if expects_number and isinstance(value, str):
                raise UserError(f"{given_at(node, key, path)}: expected a number, got {value!r}")


def given_at(node: DictConfig, key: str, path: str) -> str:
    """The dotted key ``node[key]`` was given at: the target of a plain ``${...}``
    interpolation, else ``path.key`` itself."""
    raw = OmegaConf.to_container(node, resolve=False)[key]
    if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and ":" not in raw:
        return raw[2:-1]
    return f"{path}.{key}"


def targets(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(dotted path, node) for every config node with a ``_target_``, depth first."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            yield from targets(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            yield from targets(item, f"{path}[{index}]")


def existing_file(path: str | os.PathLike, key: str) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise UserError(f"{key}: no such file: {resolved}")
    return resolved


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> dict:
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


def check_checkpoint_matches(ckpt_path: str, num_classes: int) -> None:
    """A checkpoint to resume from must have been trained for the same number of classes."""
    checkpoint = read_checkpoint(ckpt_path)
    stored = (checkpoint.get("hyper_parameters") or {}).get("model", {}).get("num_classes")
    if stored is not None and stored != num_classes:
        raise UserError(
            f"ckpt_path: {ckpt_path} was trained for {stored} classes, "
            f"but the data has {num_classes}"
        )


def checkpoint_bytes(module: nn.Module) -> int:
    """Rough size of a training checkpoint: weights plus AdamW's two moments."""
    return 3 * sum(p.numel() * p.element_size() for p in module.parameters())


def check_output_dir(run_dir: Path, needed_bytes: int) -> None:
    """The run directory takes files and has room for a few checkpoints, before training."""
    probe = run_dir / ".write_probe"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"paths.output_dir: cannot write to {run_dir}: {error.strerror}") from None
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(
            f"paths.output_dir: {free / 2**20:.0f} MiB free in {run_dir}, "
            f"checkpoints need about {needed_bytes / 2**20:.0f} MiB"
        )
