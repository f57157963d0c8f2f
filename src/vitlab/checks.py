"""Checks of a composed run config and what it built, run before any training or logger run
starts, each failing with a one-line ``UserError`` that names the key to change."""

from __future__ import annotations

import difflib
import inspect
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from vitlab.checkpoint_file import RUN_CONFIG_KEY, read_checkpoint
from vitlab.errors import UserError
from vitlab.models.pos_embed import POS_EMBEDS
from vitlab.models.vit import patch_grid

NUMBER = re.compile(r"\b(float|int)\b")
# keys of a config node that Hydra's instantiate consumes itself
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


def check_model(model_cfg: DictConfig) -> None:
    """Architecture checks that would otherwise fail deep inside instantiation."""
    try:
        if "patch_size" in model_cfg:  # a ViT (a CNN takes any size)
            patch_grid(model_cfg.img_size, model_cfg.patch_size)
    except ValueError as error:
        raise UserError(f"model: {error}") from None
    pos_embed = model_cfg.get("pos_embed", "learned")
    if pos_embed not in POS_EMBEDS:
        raise UserError(
            f"model.pos_embed: expected one of {', '.join(POS_EMBEDS)}; got {pos_embed!r}"
        )


def check_arguments(cfg: DictConfig) -> None:
    """Every config node with a ``_target_`` passes arguments its callable takes, and numbers
    where it expects numbers.

    Checked against the signatures of the ``_target_`` callables, so ``task.optimizer.lr=abc`` or
    ``+trainer.max_epoch=3`` is refused at start instead of when the object is first built. A
    value that came through an interpolation is reported under the key it was given at
    (``seed``, not the ``data.epoch_seed: ${seed}`` that received it).
    """
    for key in ("seed", "num_threads"):
        if not isinstance(cfg.get(key), int | None):
            raise UserError(f"{key}: expected an integer, got {cfg.get(key)!r}")
    for path, node in targets(cfg):
        parameters = accepted_parameters(node._target_)
        if parameters is None:
            continue
        for key in node:
            if key in HYDRA_KEYS:
                continue
            if key not in parameters:
                raise UserError(unknown_argument(f"{path}.{key}", node._target_, parameters))
            annotation = parameters[key].annotation
            if annotation is inspect.Parameter.empty:
                continue
            expects_number = NUMBER.search(str(annotation)) and "str" not in str(annotation)
            if expects_number and isinstance(node[key], str):
                raise UserError(
                    f"{given_at(node, key, path)}: expected a number, got {node[key]!r}"
                )


def accepted_parameters(target: str) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments ``target`` takes, following ``**kwargs`` that a class passes on to
    its bases; None when that cannot be known (a ``**kwargs`` that goes elsewhere)."""
    try:
        obj = get_object(target)
    except (ImportError, AttributeError, ValueError):
        return None
    classes = obj.__mro__ if inspect.isclass(obj) else (obj,)
    parameters: dict[str, inspect.Parameter] = {}
    for owner in classes:
        function = owner.__init__ if inspect.isclass(owner) else owner
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None
        own = {k: p for k, p in signature.parameters.items() if k != "self"}
        named = {k: p for k, p in own.items() if p.kind != p.VAR_KEYWORD}
        parameters = named | parameters
        if not any(p.kind == p.VAR_KEYWORD for p in own.values()):
            return parameters
        if owner is object or not inspect.isclass(obj):
            return None
    return None


def unknown_argument(key: str, target: str, parameters: dict[str, inspect.Parameter]) -> str:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, list(parameters), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"{key}: {target.rsplit('.', 1)[-1]} takes no argument {name!r}{hint}"


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


def check_checkpoint_matches(ckpt_path: str, task_target: str, num_classes: int) -> None:
    """A checkpoint to resume from must have been trained for the same task and number of
    classes."""
    run_config = read_checkpoint(ckpt_path).get(RUN_CONFIG_KEY) or {}
    stored_task = run_config.get("task", {}).get("_target_")
    if stored_task is not None and stored_task != task_target:
        raise UserError(
            f"ckpt_path: {ckpt_path} is a checkpoint of {stored_task.rsplit('.', 1)[-1]}, but this "
            f"run trains {task_target.rsplit('.', 1)[-1]}: resume a run of the same task, or "
            f"start from its weights with task.pretrained={ckpt_path}"
        )
    stored_classes = run_config.get("data", {}).get("num_classes")
    if stored_classes is not None and stored_classes != num_classes:
        raise UserError(
            f"ckpt_path: {ckpt_path} was trained for {stored_classes} classes, "
            f"but the data has {num_classes}"
        )


def check_monitor(monitor: str, logged: list[str]) -> None:
    """The task's monitored metric must be one the run logs after every validation."""
    if monitor not in logged:
        raise UserError(
            f"task.monitor: the run logs no {monitor!r} at every validation; choose one of {logged}"
        )


def check_split_sizes(
    sizes: dict[str, int], batch_size: int, world_size: int, needed: tuple[str, ...]
) -> None:
    """Training drops incomplete batches: each process needs one full batch of train images,
    and every split the run validates or tests on needs an image."""
    for split in needed:
        if sizes.get(split, 0) == 0:
            raise UserError(f"data: the {split} split is empty")
    per_process = math.ceil(sizes["train"] / world_size)
    if per_process < batch_size:
        shared = f" ({per_process} for each of {world_size} processes)" if world_size > 1 else ""
        raise UserError(
            f"data.batch_size: the train split has {sizes['train']} images{shared}, fewer than "
            f"one batch of {batch_size} (training drops incomplete batches); "
            f"set data.batch_size={per_process} or less"
        )


def checkpoint_bytes(module: nn.Module) -> int:
    """Rough size of a training checkpoint: weights plus AdamW's two moments."""
    return 3 * sum(p.numel() * p.element_size() for p in module.parameters())


def check_writable(directory: Path, key: str) -> None:
    """``directory`` exists (made if needed) and takes files."""
    probe = directory / ".write_probe"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{key}: cannot write to {directory}: {error.strerror}") from None


def check_output_dir(run_dir: Path, checkpoint_dirs: list[Path], needed_bytes: int) -> None:
    """The run directory and the checkpoint folders take files, with room for a few
    checkpoints, before training."""
    check_writable(run_dir, "paths.output_dir")
    for directory in checkpoint_dirs:
        check_writable(directory, "paths.output_dir")
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise UserError(
            f"paths.output_dir: {free / 2**20:.0f} MiB free in {run_dir}, "
            f"checkpoints need about {needed_bytes / 2**20:.0f} MiB"
        )
