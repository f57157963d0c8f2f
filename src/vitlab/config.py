"""OmegaConf resolvers that the config groups use; registered when this module is imported.

- ``${vitlab.cwd:}``: the working directory the command was started in. Hydra's own
  ``${hydra:runtime.cwd}`` is not set yet while a multirun builds ``hydra.sweep.dir``.
- ``${vitlab.precision:<accelerator>}``: ``bf16-mixed`` where that accelerator is (or may be)
  a GPU that supports it, ``32-true`` otherwise: what ``trainer.precision`` resolves to.
- ``${vitlab.optuna_direction:<mode>}``: a task's ``mode`` (``max``/``min``, Lightning's words)
  as Optuna's study direction (``maximize``/``minimize``).
- ``${vitlab.per_model:<table>,<model option>}``: a recipe's row for the chosen model, with a
  clear error when the table has none.
- ``${vitlab.options:<group>}``: the options of a packaged config group, comma-separated (what
  an entry point's ``--help`` lists for the groups it takes).
- ``${vitlab.command:<name>}``: how the user calls the entry point ``<name>`` (``train``):
  ``python train.py`` from a checkout's script, ``vitlab-train`` from the console script, so
  ``--help`` shows the command as it was typed.
- ``${vitlab.first_dir:<folder>,...}``: the first of these folders that exists, else the last
  (e.g. a dataset's system-wide install, else the project's data folder).

Also the configs' folder (``CONFIG_PATH``) and the reading of a command's overrides, which the
commands check before Hydra starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

from vitlab.errors import UserError

# the configs every Hydra app composes: the checkout's top-level conf/, which the package sees
# through its conf link (a wheel carries the files themselves)
CONFIG_PATH = str((Path(__file__).resolve().parent / "conf").resolve())

# overrides that a resume command sets itself (run.resume_command, cli's stored overrides)
RESUME_KEYS = ("ckpt_path", "hydra.run.dir")
# a failed multirun job's one-line reason, in the job's directory (written by run.main, read by
# cli.SweepSummary)
FAILURE_FILE = "failed.txt"


def parse_overrides(lines: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(lines)


def command_overrides(arguments: list[str]) -> list[Override]:
    """The Hydra overrides (``key=value``) among a command's arguments, its options left out."""
    return parse_overrides([a for a in arguments if "=" in a and not a.startswith("-")])


DIRECTIONS = {"max": "maximize", "min": "minimize"}


def bf16_precision(accelerator: str) -> str:
    """``bf16-mixed`` on a CUDA device with bf16 when ``accelerator`` may pick it, else fp32."""
    import torch  # here, not on import: --help needs no torch

    gpu_allowed = accelerator in ("auto", "gpu", "cuda")
    if gpu_allowed and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def optuna_direction(mode: str) -> str:
    if mode not in DIRECTIONS:
        raise UserError(f"task.mode: expected one of {sorted(DIRECTIONS)}, got {mode!r}")
    return DIRECTIONS[mode]


def per_model(table: Mapping[str, Any], model: str) -> Any:
    """``table[model]``: a recipe's values for the model chosen with ``model=...``."""
    if model not in table:
        raise UserError(f"model: this recipe has values for {sorted(table)}, not model={model}")
    return table[model]


def group_options(group: str) -> str:
    """The options of the packaged config group ``group``, sorted and comma-separated."""
    return ", ".join(sorted(path.stem for path in (Path(CONFIG_PATH) / group).glob("*.yaml")))


def command(name: str) -> str:
    """``python <name>.py`` or ``vitlab-<name>``, as the running command was called."""
    return f"python {name}.py" if sys.argv[0].endswith(".py") else f"vitlab-{name}"


def first_dir(*folders: str) -> str:
    return next((folder for folder in folders if Path(folder).is_dir()), folders[-1])


def register_resolvers() -> None:
    resolvers = {
        "vitlab.cwd": os.getcwd,
        "vitlab.precision": bf16_precision,
        "vitlab.optuna_direction": optuna_direction,
        "vitlab.per_model": per_model,
        "vitlab.options": group_options,
        "vitlab.command": command,
        "vitlab.first_dir": first_dir,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


register_resolvers()
