"""Experiment loggers from the ``logger`` config group, W&B set up the way sweeps need it.

W&B (``vitlab.loggers.WandbLogger``, Lightning's logger with these changes):

- offline unless W&B finds credentials for its host the way ``wandb login`` stores them
  (``WANDB_API_KEY``, an identity token file, or a netrc entry for ``WANDB_BASE_URL`` or the
  default host), checked without prompting, printing, writing files or going online;
- every multirun job its own run (grouped by the sweep, named by the job's overrides); the run
  id kept in the run directory, so a run resumed in place continues the same W&B run;
- quiet offline: vitlab prints one line (where the run is, how to sync it) and W&B nothing but
  its warnings and errors (``settings.silent`` true); online runs print W&B's usual lines;
- the run file (``<run dir>/wandb/*run-*/run-<id>.wandb``) is flushed every
  ``settings.x_transaction_log_flush_interval`` seconds, so a run killed with SIGKILL keeps what
  it logged until then (with W&B's default of 15 s, a run killed after its first checkpoint
  could keep nothing but the file's header);
- a run resumed in place starts a new segment (a new ``offline-run-*`` folder) and replays the
  steps between its checkpoint and the interruption: rows whose metrics the run's earlier
  segments already hold at that ``trainer/global_step`` are not logged again;
- ``log_model``: the monitored checkpoint is the artifact version aliased ``best``, with its
  score, monitor, epoch and step as metadata, and ``last.ckpt`` the version aliased
  ``latest`` (Lightning's own logging aliases every checkpoint callback's file ``best``,
  ``last.ckpt`` included); an offline run records them for ``wandb sync`` to upload;
- the task's monitored metric (``monitor``) summarises the run by its best value (``mode``: max
  or min), not its last (W&B's ``define_metric``);
- ``job_type`` is the run's task (``mae_pretrain``, ``linear_probe``, ...), so the project's
  runs filter by what they did;
- the logged config (``logged_config``) is the run's without machine paths (the ``paths``
  group dropped, paths under the working directory made relative to it) and with the model
  once (a task's copy of ``model`` reads ``${model}``), plus ``meta``: parameter counts,
  ``vitlab`` version and the git commit it ran from (the checkpoint keeps the full config);
- ``watch`` (opt-in): histograms of the model's gradients and/or weights every
  ``watch_log_freq`` steps (``wandb.watch``).

Checkpoints logged as artifacts (``log_model``) are pretrained weights for another run:
``task.pretrained=wandb:<entity>/<project>/<artifact>:<alias>`` downloads one, recorded as the
run's input (``use_artifact``), so a fine-tuning run links to the run it starts from.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import struct
import subprocess
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch import loggers as lightning_loggers
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

import vitlab
from vitlab.compat import wandb_credentials_found, wandb_init_arguments, wandb_record
from vitlab.extras import require

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id"
# the step Lightning's W&B logger adds to every row
STEP_KEY = "trainer/global_step"


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


def check_logger_packages(logger_cfg: Mapping[str, Any]) -> None:
    """A ``UserError`` naming the extra to install when a configured logger's package is
    missing (TensorBoard's), before any work."""
    for key, conf in logger_cfg.items():
        if isinstance(conf, Mapping) and str(conf.get("_target_")).endswith("TensorBoardLogger"):
            require("tensorboard", f"logger.{key}")


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
        conf.id = conf.get("id") or wandb_run_id(run_dir)
        conf.resume = conf.get("resume") or "allow"
        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if conf.get("group") is None and hydra_cfg.mode == RunMode.MULTIRUN:
                conf.group = Path(hydra_cfg.sweep.dir).name
            if conf.get("name") is None and hydra_cfg.job.override_dirname:
                conf.name = hydra_cfg.job.override_dirname
            if conf.get("job_type") is None:
                conf.job_type = hydra_cfg.runtime.choices.get("task") or hydra_cfg.job.name


def logged_config(cfg: DictConfig, model: torch.nn.Module) -> dict[str, Any]:
    """The run's config as a dashboard shows it: no machine paths, the model once, and
    ``meta`` (parameter counts, version, commit). Checkpoints keep the full config."""
    config = OmegaConf.to_container(cfg, resolve=True)
    root = config.pop("paths")["root_dir"]
    config = {
        key: value if key == "model" else model_referenced(value, config["model"])
        for key, value in relative_to(config, root).items()
    }
    parameters = list(model.parameters())
    config["meta"] = {
        "vitlab_version": vitlab.__version__,
        "git_commit": git_commit(Path(vitlab.__file__).parent),
        "params": sum(p.numel() for p in parameters),
        "trainable_params": sum(p.numel() for p in parameters if p.requires_grad),
    }
    return config


def relative_to(value: Any, root: str) -> Any:
    """``value`` with every path string under ``root`` made relative to it."""
    if isinstance(value, dict):
        return {key: relative_to(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_to(item, root) for item in value]
    if isinstance(value, str) and (value == root or value.startswith(root.rstrip("/") + "/")):
        return str(Path(value).relative_to(root))
    return value


def model_referenced(value: Any, model: dict) -> Any:
    """``value`` with each copy of the model config replaced by the reference ``${model}``."""
    if value == model:
        return "${model}"
    if isinstance(value, dict):
        return {key: model_referenced(item, model) for key, item in value.items()}
    return value


def git_commit(package_dir: Path) -> str | None:
    """The commit the package's source is checked out at (``-dirty`` with uncommitted changes
    to tracked files), or None when it is not a tracked checkout (an installed wheel)."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(package_dir), *args], capture_output=True, text=True, check=False
        )

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        commit = git("rev-parse", "HEAD").stdout.strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except OSError:  # no git on this machine
        return None
    return f"{commit}-dirty" if dirty else commit or None


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


class WandbLogger(lightning_loggers.WandbLogger):
    """Lightning's ``WandbLogger`` as vitlab runs it (see the module docstring).

    ``settings`` are ``wandb.Settings`` fields, checked here rather than when the run starts;
    ``silent`` null means silent when offline. ``offline`` is passed to W&B as the run's mode,
    not as Lightning's process-wide ``WANDB_MODE=dryrun``, which W&B ignores once its session
    has started (``wandb_credentials_found`` starts it) and which later runs of the process
    would inherit.
    """

    def __init__(
        self,
        *,
        offline: bool = False,
        log_model: bool | Literal["all"] = False,
        settings: Mapping[str, Any] | None = None,
        monitor: str | None = None,
        mode: Literal["max", "min"] | None = None,
        watch: Literal["gradients", "parameters", "all"] | None = None,
        watch_log_freq: int = 100,
        **kwargs: Any,
    ):
        import wandb

        super().__init__(log_model=log_model, **kwargs)
        # Lightning passes `anonymous` (None) to wandb.init, which warns that it has no effect
        init = wandb_init_arguments(self)
        del init["anonymous"]
        if offline:
            init["mode"] = "offline"
        settings = dict(settings or {})
        if settings.get("silent") is None:
            settings["silent"] = offline
        init["settings"] = wandb.Settings(**settings)
        self._monitor, self._mode = monitor, mode
        self._watch, self._watch_log_freq = watch, watch_log_freq
        self._earlier_rows: dict[int, set[str]] = {}
        if self._id and self.save_dir and rank_zero_only.rank == 0:
            self._earlier_rows = logged_metric_names(Path(self.save_dir) / "wandb", self._id)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run, started on first use; an offline run says once where it is and how to
        upload it."""
        starting = self._experiment is None
        run = super().experiment
        if starting and self._monitor and self._mode:
            # on trainer/global_step like every metric (Lightning's "*"), summarised by its best
            run.define_metric(
                self._monitor, step_metric=STEP_KEY, step_sync=True, summary=self._mode
            )
        if starting and wandb_init_arguments(self).get("mode") == "offline":
            log.info("W&B logs offline; upload the run with `wandb sync %s`", run.sync_dir)
        return run

    def watch_model(self, model: Any) -> None:
        """``wandb.watch`` of ``model`` when ``watch`` asks for it (hooks on its parameters)."""
        if self._watch:
            self.watch(model, log=self._watch, log_freq=self._watch_log_freq, log_graph=False)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if step is not None and metrics.keys() <= self._earlier_rows.get(step, set()):
            return  # a resumed run replaying a row that an earlier segment of the run holds
        super().log_metrics(metrics, step)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if self._log_model:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback
        if self._log_model == "all":
            self.log_checkpoint(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # as Lightning's: a failed run logs no checkpoint; the last checkpoint is logged last
        if status != "success" or self._experiment is None or self._log_model is not True:
            return
        callbacks = self._checkpoint_callbacks.values()
        for callback in sorted(callbacks, key=lambda callback: callback.monitor is None):
            self.log_checkpoint(callback)

    @rank_zero_only
    def log_checkpoint(self, callback: ModelCheckpoint) -> None:
        """The file of ``callback`` as a version of the run's model artifact, unless logged
        as it is: a monitored callback's best checkpoint aliased ``best`` (its score as
        metadata), an unmonitored one's (``last.ckpt``) ``latest``."""
        import wandb

        path = Path(callback.best_model_path)
        if not path.is_file() or self._logged_model_time.get(str(path)) == path.stat().st_mtime:
            return
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        metadata = {
            "original_filename": path.name,
            "epoch": saved["epoch"],
            "global_step": saved["global_step"],
        }
        if callback.monitor is not None:
            score = callback.best_model_score
            metadata |= {"monitor": callback.monitor, "mode": callback.mode, "score": float(score)}
        self._checkpoint_name = self._checkpoint_name or f"model-{self.experiment.id}"
        artifact = wandb.Artifact(self._checkpoint_name, type="model", metadata=metadata)
        artifact.add_file(str(path), name="model.ckpt", policy=self.add_file_policy)
        alias = "latest" if callback.monitor is None else "best"
        self.experiment.log_artifact(artifact, aliases=[alias])
        self._logged_model_time[str(path)] = path.stat().st_mtime


def logged_metric_names(wandb_dir: Path, run_id: str) -> dict[int, set[str]]:
    """Per ``trainer/global_step``, the names of the metrics the segments of W&B run ``run_id``
    in ``wandb_dir`` hold (online and offline run folders alike). Where W&B's record format
    changed (``compat.wandb_record``), none, with one warning: the resumed run then logs again
    the steps it replays, and loses nothing."""
    from google.protobuf.message import Error as ProtobufError

    names: dict[int, set[str]] = defaultdict(set)
    # a segment started in the same second as an earlier one gets a "-N" suffix on its folder
    try:
        for path in wandb_dir.glob(f"*run-*-{run_id}*/run-{run_id}.wandb"):
            for row in history_rows(path):
                if STEP_KEY in row:
                    names[int(row[STEP_KEY])] |= row.keys()
    except (ImportError, AttributeError, ValueError, ProtobufError) as error:
        import wandb

        log.warning(
            "W&B %s: its run file records changed (%s), so this resumed run may log again the "
            "steps between its checkpoint and the interruption; pyproject.toml names the W&B "
            "versions vitlab is tested with",
            wandb.__version__,
            error,
        )
        return {}
    return names


# W&B's run file: LevelDB's log format (32 KiB blocks of chunks with a 7-byte header: CRC-32 of
# type and data, length, type) after a 7-byte file header
BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """The records (``wandb_internal_pb2.Record``) of a W&B run file, up to its first incomplete
    or damaged one, where the file of a killed run may end."""
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        return
    offset, pending = HEADER, b""
    while offset + HEADER <= len(data):
        if BLOCK - offset % BLOCK < HEADER:  # a block's tail too short for a header: padding
            offset += BLOCK - offset % BLOCK
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        chunk = data[offset + HEADER : offset + HEADER + length]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or len(chunk) < length:
            return
        if zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        offset += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            yield wandb_record(pending)


def item_key(item: Any) -> str:
    """The name of a history or config item of a W&B record."""
    return item.key or "/".join(item.nested_key)


def history_rows(path: Path) -> Iterator[dict[str, str]]:
    """The history rows of a W&B run file (name: JSON value)."""
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            yield {item_key(item): item.value_json for item in record.history.item}


def finish_loggers() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
