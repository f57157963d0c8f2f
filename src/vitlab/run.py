"""Training and evaluation jobs: a composed Hydra config in, metrics out.

``train(cfg)`` reads like the recipe: validate, seed, build the data, task, callbacks, loggers
and trainer from the config, fit, test the best checkpoint, summarise. ``evaluate(cfg)``
rebuilds data and task from the config stored in a checkpoint and tests it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from vitlab.callbacks.throughput import training_flops
from vitlab.checks import (
    UserError,
    check_argument_types,
    check_checkpoint_matches,
    check_model,
    check_output_dir,
    checkpoint_bytes,
    existing_file,
    read_checkpoint,
)
from vitlab.distributed import distributed_job, pin_child_ranks_to_this_job
from vitlab.loggers import finish_loggers, instantiate_loggers

log = logging.getLogger(__name__)

# shown first when the config tree is printed; other top-level keys follow
CONFIG_ORDER = ("data", "model", "task", "trainer", "callbacks", "logger", "paths")


def main(job: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run ``job`` for a Hydra entry point; return the metric a sweep optimises, if any.

    A failing job of a multirun is reported and scored NaN so the rest of the sweep goes on.
    """
    try:
        with distributed_job():
            metrics = job(cfg)
    except Exception as error:
        if in_multirun():
            log.error(
                "job failed, the sweep goes on: %s",
                error,
                exc_info=not isinstance(error, UserError),
            )
            finish_loggers()
            return float("nan")
        if isinstance(error, UserError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    return optimized_value(metrics, cfg.get("optimized_metric"))


def optimized_value(metrics: Mapping[str, float], name: str | None) -> float | None:
    """The metric a sweep optimises; in a sweep, a name the run never logged is reported with
    the names it did log, and scored NaN."""
    if not name:
        return None
    if name not in metrics and in_multirun():
        log.error("optimized_metric %s was not logged; this run logged %s", name, sorted(metrics))
        return float("nan")
    return metrics.get(name)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    check_argument_types(cfg)
    check_model(cfg.model)
    ckpt_path = resume_checkpoint(cfg)
    if cfg.task.get("pretrained") and not ckpt_path:
        # loaded when fitting starts; a resumed run restores its own weights instead
        existing_file(cfg.task.pretrained, "task.pretrained")
    print_config(cfg)
    prepare_process(cfg)

    datamodule = build(cfg.data, "data")
    if cfg.data.get("num_classes", 0) is None:
        # data read the class count from its files; the model's num_classes interpolates it
        cfg.data.num_classes = datamodule.num_classes
    if ckpt_path:
        check_checkpoint_matches(ckpt_path, cfg.model.num_classes)
    task = instantiate(cfg.task)
    if "throughput" in (cfg.get("callbacks") or {}):
        task.flops_per_batch = training_flops(cfg.task, cfg.model, cfg.data.batch_size)
    if rank_zero_only.rank == 0:
        check_output_dir(Path(cfg.paths.output_dir), 2 * checkpoint_bytes(task))
    # the resolved config travels in every checkpoint (plain containers): eval.py reads it back
    task.save_hyperparameters(OmegaConf.to_container(cfg, resolve=True))
    pin_child_ranks_to_this_job()
    trainer = build_trainer(cfg)

    if cfg.get("train", True):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = scalar_metrics(trainer.callback_metrics)
    if cfg.get("test", True):
        # without training (train=false), the checkpoint given is what gets tested
        tested = best_checkpoint(trainer) if cfg.get("train", True) else ckpt_path
        trainer.test(task, datamodule=datamodule, ckpt_path=tested)
        metrics |= scalar_metrics(trainer.callback_metrics)
    report(metrics, trainer, Path(cfg.paths.output_dir), time.perf_counter() - started)
    finish_loggers()
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    if not cfg.get("ckpt_path"):
        raise UserError(
            "eval.py needs a checkpoint: python eval.py ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    if cfg.split not in ("test", "val"):
        raise UserError(f"split must be 'test' or 'val', got {cfg.split!r}")
    ckpt_path = existing_file(cfg.ckpt_path, "ckpt_path")
    run_cfg = stored_config(ckpt_path)
    run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.get("data") or {})
    print_config(OmegaConf.merge(run_cfg, {"trainer": cfg.trainer}))
    prepare_process(cfg)

    datamodule = build(run_cfg.data, "data")
    task = instantiate(run_cfg.task)
    trainer = build_trainer(cfg)
    run_split = trainer.validate if cfg.split == "val" else trainer.test
    run_split(task, datamodule=datamodule, ckpt_path=str(ckpt_path))
    metrics = scalar_metrics(trainer.callback_metrics)
    report(metrics, trainer, Path(cfg.paths.output_dir), time.perf_counter() - started)
    finish_loggers()
    return metrics


def build(conf: DictConfig, key: str) -> Any:
    """``instantiate``, with a constructor's complaint about its arguments or files (a
    ValueError or FileNotFoundError) reported as a one-line ``UserError`` naming the group."""
    try:
        return instantiate(conf)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError | FileNotFoundError):
            raise UserError(f"{key}: {error.__cause__}") from None
        raise


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path``: null, a file, or "auto" for this run directory's last checkpoint if any."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if ckpt_path == "auto":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return str(existing_file(ckpt_path, "ckpt_path"))


def stored_config(ckpt_path: Path) -> DictConfig:
    """The run config that ``train`` saved into a checkpoint."""
    hparams = read_checkpoint(ckpt_path).get("hyper_parameters") or {}
    if "task" not in hparams:
        raise UserError(
            f"ckpt_path: {ckpt_path} holds no vitlab run config (not written by train.py?)"
        )
    return OmegaConf.create(hparams)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    loggers = instantiate_loggers(cfg.get("logger") or {}, Path(cfg.paths.output_dir))
    if not loggers:
        # nothing to report learning rates to (logger=none): Lightning would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=resolve_precision(cfg.trainer.get("precision", "auto")),
    )


def prepare_process(cfg: DictConfig) -> None:
    """Threads, matmul precision and seeds for this process, before anything is built."""
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    use_tf32_matmuls()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)


def use_tf32_matmuls() -> None:
    """TF32 tensor cores for fp32 matmuls on CUDA (Ampere and newer); nothing without CUDA."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")


def resolve_precision(precision: str | int) -> str | int:
    """``auto``: bf16 mixed precision on a GPU that supports it, full fp32 otherwise."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    if not best:
        log.warning("no best checkpoint was saved: testing the current weights")
        return None
    return best


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        name: float(value) for name, value in metrics.items() if torch.as_tensor(value).numel() == 1
    }


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The composed config as a tree: one branch per group, then the run's own keys."""
    tree = Tree("config", guide_style="dim")
    groups = [k for k in CONFIG_ORDER if k in cfg] + [
        k for k in cfg if k not in CONFIG_ORDER and isinstance(cfg[k], DictConfig)
    ]
    for key in groups:
        tree.add(f"[bold]{key}[/bold]").add(OmegaConf.to_yaml(cfg[key], resolve=True).rstrip())
    scalars = {k: cfg[k] for k in cfg if k not in groups}
    tree.add("[bold]run[/bold]").add(OmegaConf.to_yaml(scalars, resolve=True).rstrip())
    Console(stderr=True).print(tree)


@rank_zero_only
def report(metrics: Mapping[str, float], trainer: L.Trainer, run_dir: Path, seconds: float) -> None:
    """Results table on the console, and ``metrics.json`` in the run directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(dict(sorted(metrics.items())), indent=2))
    table = Table(title="results", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    console = Console(stderr=True)
    console.print(table)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best:
        console.print(f"best checkpoint: {best}")
    console.print(f"run directory: {run_dir}   time: {seconds / 60:.1f} min")
