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

import functools
import sys
from collections.abc import Callable

from vitlab.config import CONFIG_PATH
from vitlab.errors import exit_on_user_error
from vitlab.extras import require_plugins

__all__ = ["CONFIG_PATH", "start"]


def start(app: Callable[[], object]) -> None:
    """Runs a Hydra app after checking that the plugins its command line picks are installed."""
    with exit_on_user_error(functools.partial(print, file=sys.stderr)):
        require_plugins(sys.argv[1:])
    app()
