"""Training and evaluation jobs: a composed Hydra config in, metrics out.

``train(cfg)`` reads like the recipe: check the config, seed, build the data, task, callbacks,
loggers and trainer from it, check what they will do, fit, test the best checkpoint, summarise.
``evaluate(cfg)`` rebuilds data and task from the config stored in a checkpoint and tests it.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from vitlab.callbacks.knn import KNNMonitor
from vitlab.checkpoint_file import load_run
from vitlab.checks import (
    check_arguments,
    check_checkpoint_matches,
    check_model,
    check_monitor,
    check_output_dir,
    check_split_sizes,
    checkpoint_bytes,
)
from vitlab.config import FAILURE_FILE, RESUME_KEYS  # (importing it registers the resolvers)
from vitlab.distributed import distributed_job, pin_child_ranks_to_this_job, take_launcher_rank
from vitlab.errors import UserError, existing_file, exit_on_user_error
from vitlab.loggers import (
    WANDB_ID_FILE,
    WandbLogger,
    check_logger_packages,
    finish_loggers,
    instantiate_loggers,
    logged_config,
)
from vitlab.recipes import check_recipe_named
from vitlab.tasks.base import RecipeTask, build_task
from vitlab.weights import check_source

log = logging.getLogger(__name__)
# Lightning's own use of a deprecated torch API, printed on every run; nothing a user can change
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

# shown first when the config tree is printed; other top-level keys follow
CONFIG_ORDER = ("data", "model", "task", "trainer", "callbacks", "logger", "paths")
# the results table shows the task's metrics, not the monitors' (lr, throughput)
RESULT_PREFIXES = ("train/", "val/", "test/")


def main(job: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run ``job`` for a Hydra entry point; return the score a sweep optimises (the best value of
    the task's monitored metric, ``<monitor>_best``), if any.

    A user's mistake is one line (``error: <key>: ...``) on the console and in the run's log,
    and exit code 2. A failing job of a multirun is reported and scored NaN so the rest of the
    sweep goes on.
    """
    with exit_on_user_error(log.error), exit_code_on_stop():
        try:
            with distributed_job():
                metrics = job(cfg)
        except Exception as error:
            user_error = as_user_error(error)
            if not in_multirun():
                if user_error is not None:
                    discard_unstarted_run(Path(cfg.paths.output_dir))
                    raise user_error from None
                log.error(
                    "the run failed; its directory keeps what it wrote: %s", cfg.paths.output_dir
                )
                raise
            log.error(
                "job failed, the sweep goes on: %s", user_error or error, exc_info=not user_error
            )
            record_failure(user_error or error)
            finish_loggers()
            return float("nan")
    return metrics.get(best_key(cfg.task.monitor)) if "task" in cfg else None


@contextmanager
def exit_code_on_stop() -> Iterator[None]:
    """Exit as a shell reports a process a signal stopped (128 + its number) when the run is
    stopped: 130 for Ctrl-C, 143 for SIGTERM (``kill``, ``timeout``, a cluster's pre-emption).

    Lightning ends training on SIGTERM with ``SIGTERMException`` (a ``SystemExit`` of code 0)
    and on Ctrl-C with ``sys.exit(1)`` raised while handling the ``KeyboardInterrupt``; a script
    or scheduler reading the exit code would take either for another outcome.
    """
    try:
        yield
    except SIGTERMException:
        raise SystemExit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:
        raise SystemExit(128 + signal.SIGINT) from None
    except SystemExit as stop:
        if isinstance(stop.__context__, KeyboardInterrupt):
            raise SystemExit(128 + signal.SIGINT) from None
        raise


def as_user_error(error: Exception) -> UserError | None:
    """``error`` as the user's mistake it reports, if it is one: a ``UserError``, or one raised by
    a resolver while the config was read (OmegaConf re-raises it under its own type)."""
    if isinstance(error, UserError):
        return error
    prefix = f"{UserError.__name__} raised while resolving interpolation: "
    message = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, OmegaConfBaseException) and message.startswith(prefix):
        return UserError(message.removeprefix(prefix))
    return None


def record_failure(error: Exception) -> None:
    """Leave a failed multirun job's one-line reason in its directory, for the sweep's summary
    (vitlab.cli.SweepSummary)."""
    described = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    (output_dir / FAILURE_FILE).write_text(described.splitlines()[0] + "\n")


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove the run directory of a run refused before any work: it holds only what Hydra
    wrote on starting (``.hydra/``, ``<job>.log``), the W&B run id it would have used and empty
    folders (``checkpoints/``), and the refusal's one line says it all. A directory holding
    anything else (a run resumed into it, a W&B run) is left as it is."""
    if run_dir.is_dir() and all(
        entry.name in (".hydra", WANDB_ID_FILE)
        or entry.suffix == ".log"
        or (entry.is_dir() and not any(entry.iterdir()))
        for entry in run_dir.iterdir()
    ):
        shutil.rmtree(run_dir, ignore_errors=True)  # every DDP rank refuses the same run


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    if cfg.extras.ignore_warnings:
        warnings.filterwarnings("ignore")
    ckpt_path = check_config(cfg)
    prepare_process(cfg)
    datamodule, task, trainer = build_run(cfg, ckpt_path)
    if cfg.extras.print_config:
        print_config(cfg)
    # the resolved config travels in every checkpoint (plain containers): eval.py reads it back
    task.run_config = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(logged_config(cfg, task.model))
        if isinstance(logger, WandbLogger):
            logger.watch_model(task.model)
    pin_child_ranks_to_this_job()

    if cfg.get("train", True):
        with warnings.catch_warnings():
            for message in task.expected_warnings:
                warnings.filterwarnings("ignore", message=message)
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = scalar_metrics(trainer.callback_metrics)
    best = best_score(trainer, task, metrics)
    if best is not None:
        metrics[best_key(task.monitor)] = best
    tested = None
    if cfg.get("test", True):
        # without training (train=false), the checkpoint given is what gets tested
        tested = best_checkpoint(trainer) if cfg.get("train", True) else ckpt_path
        trainer.test(task, datamodule=datamodule, ckpt_path=tested, verbose=False)
        metrics |= scalar_metrics(trainer.callback_metrics)
    report(metrics, tested, Path(cfg.paths.output_dir), time.perf_counter() - started)
    finish_loggers()
    return metrics


def check_config(cfg: DictConfig) -> str | None:
    """What can be checked before anything is built; returns the checkpoint to resume from."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        check_recipe_named(hydra_cfg.overrides.task, hydra_cfg.runtime.choices)
    check_arguments(cfg)
    check_tags(cfg)
    check_accelerator(cfg.trainer)
    check_model(cfg.model)
    check_logger_packages(cfg.get("logger") or {})
    ckpt_path = resume_checkpoint(cfg)
    pretrained = cfg.task.get("pretrained")
    if pretrained and not ckpt_path:
        # loaded when fitting starts; a resumed run restores its own weights instead
        check_source(str(pretrained))
    return ckpt_path


def check_tags(cfg: DictConfig) -> None:
    if cfg.extras.enforce_tags and not cfg.get("tags"):
        raise UserError(
            "tags: this run has none and extras.enforce_tags is on; name them, "
            "e.g. tags=[baseline,vit_s]"
        )


def check_accelerator(trainer: DictConfig) -> None:
    """A GPU trainer (``trainer=gpu``, ``ddp``) on a machine where torch sees no CUDA GPU."""
    if trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise UserError(
            f"trainer.accelerator: {trainer.accelerator} asked for, but torch {torch.__version__} "
            f"({build}) sees no CUDA GPU here; train on the CPU with trainer=cpu"
        )


def build_run(
    cfg: DictConfig, ckpt_path: str | None
) -> tuple[L.LightningDataModule, RecipeTask, L.Trainer]:
    """The data (read), the task and the trainer, checked against each other before any
    training or logger run starts."""
    datamodule = build(cfg.data, "data")
    prepare(datamodule)
    if cfg.data.get("num_classes", 0) is None:
        # data read the class count from its files; the model's num_classes interpolates it
        cfg.data.num_classes = datamodule.num_classes
    if ckpt_path:
        check_checkpoint_matches(ckpt_path, cfg.task._target_, cfg.data.num_classes)
    task = build(cfg.task, "task", build_task)
    if not ckpt_path:
        task.check_pretrained()
    trainer = build_trainer(cfg)
    check_monitor(task.monitor, val_metric_names(task, trainer))
    sizes, world = datamodule.dataset_sizes(), trainer.world_size
    check_split_sizes(sizes, datamodule.batch_size, world, splits_used(cfg, trainer))
    if rank_zero_only.rank == 0:
        needed = 2 * checkpoint_bytes(task)
        check_output_dir(Path(cfg.paths.output_dir), checkpoint_dirs(trainer), needed)
    task.set_input_shape(datamodule.batch_shape())
    return datamodule, task, trainer


def evaluate(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    if not cfg.get("ckpt_path"):
        raise UserError(
            "ckpt_path: eval.py needs a checkpoint: "
            "python eval.py ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    if cfg.split not in ("test", "val"):
        raise UserError(f"split: expected 'test' or 'val', got {cfg.split!r}")
    ckpt_path = existing_file(cfg.ckpt_path, "ckpt_path")
    changes = {key: value for key, value in (cfg.get("data") or {}).items() if value is not None}
    prepare_process(cfg)
    trained = load_run(ckpt_path, changes, lambda data: build(data, "data"))
    print_config(OmegaConf.merge(trained.config, {"trainer": cfg.trainer}))
    trainer = build_trainer(cfg)
    run_split = trainer.validate if cfg.split == "val" else trainer.test
    run_split(trained.task, datamodule=trained.data, verbose=False)
    metrics = scalar_metrics(trainer.callback_metrics)
    report(metrics, str(ckpt_path), Path(cfg.paths.output_dir), time.perf_counter() - started)
    finish_loggers()
    return metrics


def build(conf: DictConfig, key: str, builder: Callable[[DictConfig], Any] = instantiate) -> Any:
    """``builder(conf)``, with a constructor's complaint about its arguments or files (a
    ValueError or FileNotFoundError) reported as a one-line ``UserError`` naming the group, or
    the argument when the complaint starts with its name (``data.batch_size: ...``)."""
    try:
        return builder(conf)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError | FileNotFoundError):
            raise UserError(located(key, str(error.__cause__), conf)) from None
        raise


def located(key: str, message: str, conf: DictConfig) -> str:
    """``message`` under ``key``: ``key.arg: ...`` when it starts with ``arg: `` of ``conf``."""
    argument, separator, rest = message.partition(": ")
    if separator and argument in conf:
        return f"{key}.{argument}: {rest}"
    return f"{key}: {message}"


def prepare(datamodule: L.LightningDataModule) -> None:
    """Write (``prepare_data``) and read (``setup``) the data now, before the trainer starts, with
    a missing or malformed dataset reported as a one-line ``UserError``."""
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except (ValueError, FileNotFoundError) as error:
        raise UserError(f"data: {error}") from None


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path``: null, a file, or "auto" for this run directory's last checkpoint if any."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if ckpt_path == "auto":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        log.info("ckpt_path=auto: no %s yet, so this run starts from scratch", last)
        return None
    return str(existing_file(ckpt_path, "ckpt_path"))


def splits_used(cfg: DictConfig, trainer: L.Trainer) -> tuple[str, ...]:
    """The splits this run reads besides train: val when it validates, test when it tests."""
    validates = cfg.get("train", True) and trainer.limit_val_batches != 0
    return ("val",) * bool(validates) + ("test",) * bool(cfg.get("test", True))


def checkpoint_dirs(trainer: L.Trainer) -> list[Path]:
    return [
        Path(callback.dirpath)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint) and callback.dirpath
    ]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [
        instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c
    ]
    loggers = instantiate_loggers(cfg.get("logger") or {}, Path(cfg.paths.output_dir))
    if not loggers:
        # nothing to report learning rates to (logger=none): Lightning would refuse to start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=[*callbacks, ResumeHint()], logger=loggers or False)


def val_metric_names(task: RecipeTask, trainer: L.Trainer) -> list[str]:
    """What the run logs after every validation: the task's metrics, then its callbacks' (the
    k-NN monitor's ``val/knn_acc1`` when it runs every epoch)."""
    from_callbacks = [
        name
        for callback in trainer.callbacks
        if isinstance(callback, KNNMonitor)
        for name in callback.val_metric_names()
    ]
    return task.val_metric_names() + from_callbacks


class ResumeHint(L.Callback):
    """On Ctrl-C or SIGTERM, names the command that continues the run from its last checkpoint.

    Under SLURM with auto-requeue, Lightning saves and requeues the job itself before the
    SIGTERM; the line names the same run directory the requeued job resumes in.
    """

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        stopped = isinstance(exception, KeyboardInterrupt | SIGTERMException)
        if stopped and trainer.is_global_zero:
            log.warning("interrupted; continue from the last checkpoint with: %s", resume_command())


def resume_command() -> str:
    """The command that resumes this job in its run directory from its last checkpoint."""
    hydra_cfg = HydraConfig.get()
    kept = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith(RESUME_KEYS)]
    run_dir = hydra_cfg.runtime.output_dir
    return " ".join(["python train.py", *kept, "ckpt_path=auto", f"hydra.run.dir={run_dir}"])


def prepare_process(cfg: DictConfig) -> None:
    """Rank, threads, matmul precision and seeds for this process, before anything is built."""
    take_launcher_rank(cfg.trainer.get("devices"))
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    use_tf32_matmuls()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)


def use_tf32_matmuls() -> None:
    """TF32 tensor cores for fp32 matmuls on CUDA (Ampere and newer); nothing without CUDA."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")


def best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    if not best:
        if not trainer.fast_dev_run:
            log.warning("no best checkpoint was saved: testing the current weights")
        return None
    return best


def best_score(trainer: L.Trainer, task: RecipeTask, metrics: Mapping[str, float]) -> float | None:
    """The best value of the task's monitored metric over the run: the best checkpoint's score
    when a checkpoint callback follows that metric, else its last value."""
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor == task.monitor and callback.best_model_score is not None:
            return float(callback.best_model_score)
    return metrics.get(task.monitor)


def best_key(monitor: str) -> str:
    """The name under which a run reports the best value of its monitored metric."""
    return f"{monitor}_best"


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        name: float(value) for name, value in metrics.items() if torch.as_tensor(value).numel() == 1
    }


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """The composed config as a tree: one branch per group, then the run's own keys. A group
    that another one includes whole (``task.model: ${model}``) is shown by reference."""
    tree = Tree("config", guide_style="dim")
    groups = [k for k in CONFIG_ORDER if k in cfg] + [
        k for k in cfg if k not in CONFIG_ORDER and isinstance(cfg[k], DictConfig)
    ]
    for key in groups:
        tree.add(f"[bold]{key}[/bold]").add(group_yaml(cfg, key))
    scalars = {k: cfg[k] for k in cfg if k not in groups}
    tree.add("[bold]run[/bold]").add(OmegaConf.to_yaml(scalars, resolve=True).rstrip())
    Console(stderr=True).print(tree)


def group_yaml(cfg: DictConfig, key: str) -> str:
    """``cfg[key]`` as resolved YAML, with values that are whole other groups (``${model}``)
    left as the reference."""
    raw = OmegaConf.to_container(cfg[key], resolve=False)
    resolved = OmegaConf.to_container(cfg[key], resolve=True)
    shown = {
        name: raw[name] if is_group_reference(raw[name], cfg) else resolved[name] for name in raw
    }
    return OmegaConf.to_yaml(shown).rstrip()


def is_group_reference(value: Any, cfg: DictConfig) -> bool:
    return isinstance(value, str) and value.startswith("${") and value[2:-1] in cfg


@rank_zero_only
def report(metrics: Mapping[str, float], tested: str | None, run_dir: Path, seconds: float) -> None:
    """Results table of the task's metrics on the console, all metrics in ``metrics.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(dict(sorted(metrics.items())), indent=2))
    table = Table(title="results", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        if name.startswith(RESULT_PREFIXES) and "/device/" not in name:
            table.add_row(name, f"{metrics[name]:.4f}")
    console = Console(stderr=True, soft_wrap=True)  # paths stay whole, to copy or grep
    console.print(table)
    if tested:
        console.print(f"tested checkpoint: {tested}")
    console.print(f"run directory: {run_dir}   time: {seconds / 60:.1f} min")
