"""The commands: ``vitlab-train``, ``vitlab-eval``, ``vitlab-predict`` (Hydra apps composing the
configs packaged in ``vitlab/conf``), ``vitlab-export`` and ``vitlab-pack``. A checkout's
``train.py``, ``eval.py`` and ``predict.py`` call the same functions, so ``python train.py ...``
and ``vitlab-train ...`` are one command.

Each Hydra app's job name is its module's name (``train``, ``eval``, ``predict``), so run
directories are ``logs/train/runs/<timestamp>`` whichever way it starts. A user's own config
folder joins the search path with ``hydra.searchpath=[file://my_conf]`` (experiments, a
``local/default.yaml``), without copying the packaged configs.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from vitlab.config import (
    CONFIG_PATH,
    FAILURE_FILE,
    RESUME_KEYS,
    command_overrides,
    parse_overrides,
)
from vitlab.errors import UserError, exit_on_user_error
from vitlab.extras import require_plugins
from vitlab.recipes import with_recipe

__all__ = ["CONFIG_PATH", "FAILURE_FILE", "RESUME_KEYS", "SweepSummary", "start"]

# Hydra's options that compose another config than the command's own
CONFIG_OPTIONS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")
# Hydra's options that show something and run no job
SHOW_OPTIONS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion")
# packages built against one torch release each: torchvision 0.(minor + 15) for torch 2.<minor>
TORCH_COMPANIONS = {"torchvision": "torchvision", "torchcodec": "torchcodec.decoders"}


def start(app: Callable[[], object], config_name: str) -> None:
    """Runs a Hydra app (composing ``config_name``) after checking that the plugins its command
    line picks are installed and that the keys it sets exist."""
    with exit_on_user_error(functools.partial(print, file=sys.stderr)):
        require_plugins(sys.argv[1:])
        sys.argv[1:] = with_stored_overrides(sys.argv[1:])
        if not set(CONFIG_OPTIONS) & set(sys.argv[1:]):
            sys.argv[1:] = with_recipe(sys.argv[1:], config_name)
        check_keys(sys.argv[1:], config_name)
        if not set(SHOW_OPTIONS) & set(sys.argv[1:]):
            check_torch_companions()
    app()


def check_torch_companions() -> None:
    """A ``UserError`` naming the fix when torchvision or torchcodec does not load with the
    installed torch (built for another torch release, or a CUDA build beside a CPU torch), where
    importing vitlab's data modules would fail with a traceback about ``torchvision::nms`` or
    ``libnvrtc``."""
    import torch  # here: --help imports no torch

    for package, module in TORCH_COMPANIONS.items():
        try:
            importlib.import_module(module)
        except (ImportError, OSError, RuntimeError) as error:
            reason = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise UserError(
                f"{package} {installed_version(package)} does not load with torch "
                f"{torch.__version__} ({reason}); install the {package} built for this torch: "
                f"{companion_install_command(package, torch.__version__)}"
            ) from None


def installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def companion_install_command(package: str, torch_version: str) -> str:
    """``pip install`` of ``package`` from the PyTorch index of torch's build (``cpu``,
    ``cu130``, ...), pinned to the release that goes with it where that is a rule."""
    release, _, build = torch_version.partition("+")
    minor = release.split(".")[1]
    pinned = f"'{package}==0.{int(minor) + 15}.*'" if package == "torchvision" else package
    index = f" --index-url https://download.pytorch.org/whl/{build}" if build else ""
    return f"pip install --force-reinstall --no-deps {pinned}{index}"


def check_keys(arguments: list[str], config_name: str) -> None:
    """A value set on a key the config lacks (``trainer.max_epoch=3``, ``seeed=1``) is a
    ``UserError`` naming the closest keys, where Hydra would advise adding it with ``+``.

    Hydra reports a failed composition itself and exits, so the config is composed once before
    it does, when the command sets a value; any other failure is left to Hydra to report.
    """
    if {"-m", "--multirun"} & set(arguments) or set(CONFIG_OPTIONS) & set(arguments):
        return
    overrides = command_overrides(arguments)
    if not any(sets_a_value(o) for o in overrides):
        return
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            compose(config_name, overrides=[o.input_line for o in overrides])
    except ConfigCompositionException as error:
        missing = error.__cause__
        if isinstance(missing, ConfigAttributeError | ConfigKeyError) and "not in struct" in str(
            missing
        ):
            keys = [str(key) for key in missing.parent_node or {} if key != "hydra"]
            raise UserError(no_such_key(missing.full_key, keys)) from None
    except Exception:  # noqa: BLE001  (Hydra reports it as it composes)
        return


def sets_a_value(override: Override) -> bool:
    """Whether ``override`` sets a config value (not a group option, ``+``/``~``, or Hydra's)."""
    key = override.key_or_group
    return (
        override.type == OverrideType.CHANGE
        and not key.startswith("hydra")
        and not (Path(CONFIG_PATH) / key).is_dir()
    )


def no_such_key(full_key: str, keys: list[str]) -> str:
    name = full_key.rpartition(".")[2]
    close = difflib.get_close_matches(name, keys, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else f"add one with +{full_key}=..."
    return f"{full_key}: no such key; {hint}"


def with_stored_overrides(arguments: list[str]) -> list[str]:
    """The command line of a resume into a run directory (``ckpt_path=auto
    hydra.run.dir=<run>``), completed with the overrides that run stored: the resumed run goes
    on with its own recipe. An override that differs from them is a ``UserError`` naming it
    (a new run from the checkpoint, ``ckpt_path=<run>/checkpoints/last.ckpt``, may change it).

    Read here, before Hydra starts, since Hydra rewrites ``<run>/.hydra/overrides.yaml`` with
    the new command's overrides before the job runs.
    """
    if {"-m", "--multirun"} & set(arguments):
        return arguments
    typed = command_overrides(arguments)
    values = {o.key_or_group: o.value() for o in typed}
    if values.get("ckpt_path") != "auto" or "hydra.run.dir" not in values:
        return arguments
    run_dir = Path(str(values["hydra.run.dir"]))
    stored_file = run_dir / ".hydra" / "overrides.yaml"
    if not stored_file.is_file():
        return arguments
    stored = {o.input_line: o for o in parse_overrides(yaml.safe_load(stored_file.read_text()))}
    for override in typed:
        if override.input_line not in stored and not is_own_setting(override):
            key = override.key_or_group
            was = [line for line, o in stored.items() if o.key_or_group == key]
            raise UserError(
                f"{key}: {run_dir} ran with {was[0] if was else f'no {key} override'}, and "
                f"ckpt_path=auto resumes it with its own settings: leave out "
                f"{override.input_line}, or start a new run from its checkpoint with "
                f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
            )
    typed_lines = {o.input_line for o in typed}
    kept = [line for line, o in stored.items() if not is_own_setting(o)]
    return [*[line for line in kept if line not in typed_lines], *arguments]


def is_own_setting(override: Override) -> bool:
    """Whether an override belongs to one command rather than to the run's recipe: what a
    resume sets itself, and Hydra's own settings (``hydra.*``, ``hydra/...``)."""
    key = override.key_or_group
    return key.startswith(RESUME_KEYS) or key.split(".")[0].split("/")[0] == "hydra"


class SweepSummary(Callback):
    """At the end of a multirun: "N of M jobs failed", each failed job's overrides and one-line
    reason, and exit code 1, when any job failed (a failing job is scored NaN so the sweep goes
    on). It reads the jobs' directories, so it sees jobs another launcher ran elsewhere."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = [path.parent for path in Path(config.hydra.sweep.dir).glob("*/.hydra")]
        failed = sorted((job for job in jobs if (job / FAILURE_FILE).is_file()), key=job_number)
        if not failed:
            return
        lines = [f"{len(failed)} of {len(jobs)} jobs failed:"]
        for job in failed:
            overrides = (job / ".hydra" / "overrides.yaml").read_text().splitlines()
            typed = " ".join(line.removeprefix("- ") for line in overrides)
            reason = (job / FAILURE_FILE).read_text().strip()
            lines.append(f"  {job.name} ({typed}): {reason}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(1)


def job_number(job: Path) -> tuple[int, str]:
    """Jobs in the order they were launched (``hydra.sweep.subdir`` is the job's number)."""
    return (int(job.name), "") if job.name.isdigit() else (sys.maxsize, job.name)
