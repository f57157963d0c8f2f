"""The optional parts of vitlab and the pip extra that installs each (pyproject.toml's
``[project.optional-dependencies]``): a command that needs a missing one stops with one line,
``<key>: needs <module>: pip install 'vitlab[<extra>]'``, before any work."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterable

from vitlab.errors import UserError

# the modules each extra provides that vitlab imports
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "sweep": ("hydra_plugins.hydra_optuna_sweeper.optuna_sweeper", "sqlalchemy"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher",),
    "joblib": ("hydra_plugins.hydra_joblib_launcher.joblib_launcher",),
    "timm": ("timm",),
    "tensorboard": ("tensorboard",),
    "shards": ("litdata",),
}

# command-line options that need a Hydra plugin (group, option; None: any option)
PLUGIN_OPTIONS: dict[tuple[str, str | None], str] = {
    ("hparams_search", None): "sweep",
    ("hydra/sweeper", "optuna"): "sweep",
    ("hydra/launcher", "slurm"): "slurm",
    ("hydra/launcher", "local"): "slurm",
    ("hydra/launcher", "joblib"): "joblib",
}
# command-line options that need a program on this machine (group, option): program, what to do
PROGRAM_OPTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("hydra/launcher", "slurm"): (
        "srun",
        "submit from a SLURM cluster's login node, or try the same launcher here with "
        "hydra/launcher=local",
    ),
}


def require(extra: str, key: str) -> None:
    """A ``UserError`` naming ``key`` and ``pip install 'vitlab[extra]'`` when a module of the
    extra does not import."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(
                f"{key}: needs {package(module)}: pip install 'vitlab[{extra}]'"
            ) from None


def package(module: str) -> str:
    """The package a module belongs to (a Hydra plugin's, not the shared ``hydra_plugins``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "hydra_plugins" else parts[0]


def require_plugins(overrides: Iterable[str]) -> None:
    """``require`` for each command-line override that picks an option served by a Hydra plugin
    (``hparams_search=vit_optuna``, ``hydra/launcher=slurm``), checked before Hydra composes
    (a missing plugin is otherwise a composition error about a missing config); and that the
    program such an option runs is on this machine (``srun`` for SLURM)."""
    for override in overrides:
        group, _, option = override.lstrip("+~").partition("=")
        extra = PLUGIN_OPTIONS.get((group, option)) or PLUGIN_OPTIONS.get((group, None))
        if extra and option not in ("", "null"):
            require(extra, group)
        program, advice = PROGRAM_OPTIONS.get((group, option), (None, ""))
        if program and shutil.which(program) is None:
            raise UserError(
                f"{group}: {option} needs {program}, not found on this machine: {advice}"
            )
