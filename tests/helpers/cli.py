"""The entry points run as a user runs them, from a fresh copy of the repository.

``python <script> ...`` (``train.py``, ``eval.py``, ``predict.py``) and ``python -m <module> ...``
run in this process by default: the script's file (or the module) runs as ``__main__`` with
``sys.argv`` set, the copy as working directory, the copy's own environment (its home directory,
no ``WANDB_*`` or ``HYDRA_*`` variables) and Python's own display of warnings, and whatever the
run changed in the process (Hydra's global state, logging handlers, the W&B run and its service,
environment, threads, warning filters) is put back after it, as a process that ends leaves
nothing behind. What a process of its own needs (DDP ranks relaunch ``sys.argv``; a signal
interrupts a process) runs in one: ``CLI.in_subprocess``.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only

from vitlab.loggers import finish_loggers

ROOT = Path(__file__).resolve().parents[2]
# what a fresh copy of the repository leaves out at its top: the package is installed, tests
# are not a user's, the rest is output or caches
NOT_COPIED = frozenset({
    ".git", ".venv", "src", "tests", "logs", "data", "wandb", "outputs", "multirun",
    ".pytest_cache", ".ruff_cache", "exported",
})  # fmt: skip


# the modules `python train.py|eval.py|predict.py` import (vitlab.run and vitlab.predict once
# the command starts its job)
ENTRY_POINTS = (
    "vitlab.cli.train",
    "vitlab.cli.eval",
    "vitlab.cli.predict",
    "vitlab.run",
    "vitlab.predict",
)


def filters_installed_on_import(modules: tuple[str, ...]) -> list[tuple]:
    """The warning filters ``modules`` install when imported (vitlab.run's, for one).

    A fresh process has them; in pytest they vanish with the test (or conftest loading) that
    first imported the module, since pytest scopes warning filters to each test. Taken while
    this module is imported (from conftest, before any test imports them).
    """
    with warnings.catch_warnings():
        before = list(warnings.filters)
        for name in modules:
            importlib.import_module(name)
        return [entry for entry in warnings.filters if entry not in before]


IMPORT_FILTERS = filters_installed_on_import(ENTRY_POINTS)


class Capture(Protocol):
    """What the command printed since the last call (pytest's ``capfd``)."""

    def readouterr(self) -> tuple[str, str]: ...


def fresh_copy(destination: Path) -> Path:
    """The repository's entry points, benchmarks and notebooks, without outputs (the configs
    come with the installed package)."""

    def left_out(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {n for n in names if (top and n in NOT_COPIED) or n == "__pycache__"}

    shutil.copytree(ROOT, destination, ignore=left_out)
    return destination


class CLI:
    """Runs ``python <script> <arguments>`` in a fresh copy of the repository, the way a user
    does: the copy is the working directory (so logs and data go to its ``logs/`` and
    ``data/``), the logger is the configured one, and W&B finds no credentials (the home
    directory is the copy's own), so it logs offline as it does for a new user.

    ``capture`` reads back what a command printed; without one (a fixture wider than a test),
    what it prints stays in pytest's report and the result's stdout and stderr are empty.
    """

    def __init__(self, repo: Path, home: Path, capture: Capture | None = None):
        self.repo, self.home, self.log_dir, self.capture = repo, home, repo / "logs", capture
        home.mkdir(exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
        self.env = inherited | {"HOME": str(home)}

    def __call__(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """``python <command>`` in this process."""
        self.read_output()  # what came before is not this command's
        with self.process_of_its_own():
            returncode = run_as_main(command)
        stdout, stderr = self.read_output()
        return checked(
            subprocess.CompletedProcess(["python", *command], returncode, stdout, stderr), check
        )

    def in_subprocess(
        self, *command: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        """``python <command>`` in a process of its own."""
        result = subprocess.run(
            [sys.executable, *command],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return checked(result, check)

    def stopped(
        self, sig: signal.Signals, *command: str, when: Callable[[], bool], timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """``python <command>`` in a process of its own, sent ``sig`` as soon as ``when()``
        holds (checked while it runs), as a terminal's Ctrl-C or a scheduler's kill stops it.

        The process takes SIGINT as one started from a shell does (Python's
        ``KeyboardInterrupt``) even where this process ignores SIGINT, which a child inherits:
        a pytest-xdist worker is not sure to have its default handler by the time a test runs.
        """
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(
                [sys.executable, *command],
                cwd=self.repo,
                env=self.env,
                stdout=out,
                stderr=err,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            deadline = time.monotonic() + timeout
            while not when():
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    err.seek(0)
                    raise AssertionError(f"not stopped as planned:\n{err.read()[-4000:]}")
                time.sleep(0.05)
            process.send_signal(sig)
            returncode = process.wait(timeout=timeout)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(command, returncode, out.read(), err.read())

    def read_output(self) -> tuple[str, str]:
        return self.capture.readouterr() if self.capture else ("", "")

    @contextmanager
    def process_of_its_own(self) -> Iterator[None]:
        """This process as a command started in the copy would find it, and as it was
        before once the command ends."""
        with ExitStack() as stack:
            stack.enter_context(working_directory(self.repo))
            stack.enter_context(environment(self.env))
            stack.enter_context(python_warnings())
            stack.enter_context(logging_restored())
            stack.enter_context(process_state_restored())
            if self.env.get("OMP_NUM_THREADS"):
                torch.set_num_threads(int(self.env["OMP_NUM_THREADS"]))  # torch reads it on start
            stack.callback(end_wandb)
            stack.callback(clear_hydra)
            end_wandb()
            clear_hydra()
            yield

    def run_dirs(self, script: str = "train") -> list[Path]:
        """This copy's run directories of ``script``, oldest first."""
        folder = self.log_dir / script / "runs"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def sweep_dirs(self, script: str = "train") -> list[Path]:
        folder = self.log_dir / script / "multiruns"
        return sorted(folder.iterdir()) if folder.is_dir() else []


def checked(result: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(result.args)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def run_as_main(command: tuple[str, ...]) -> int:
    """Run ``python <command>``'s script (or ``-m`` module, or ``-c`` code) as ``__main__``;
    its exit status.

    An exception that escapes is printed as Python prints it, with status 1.
    """
    try:
        if command[0] == "-c":
            sys.argv = ["-c", *command[2:]]
            exec(compile(command[1], "<string>", "exec"), {"__name__": "__main__"})
        elif command[0] == "-m":
            sys.argv = [command[1], *command[2:]]  # argv[0] becomes the module's file
            with warnings.catch_warnings():
                # the module was imported by an earlier test; a fresh process would not warn
                warnings.filterwarnings("ignore", r".*found in sys\.modules", RuntimeWarning)
                runpy.run_module(command[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(command)
            sys.path.insert(0, str(Path(command[0]).resolve().parent))  # as Python puts it
            runpy.run_path(command[0], run_name="__main__")
    except SystemExit as exit:
        return exit_status(exit.code)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def exit_status(code: object) -> int:
    """The status a process ends with for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


@contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` (and what the command sets in it), then as it was."""
    before = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


@contextmanager
def python_warnings() -> Iterator[None]:
    """Warnings printed on stderr as Python prints them (pytest would only record them), under
    the filters in force and those the entry points install on import, and the filters as they
    were afterwards."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        for action, message, category, module, lineno in reversed(IMPORT_FILTERS):
            warnings.filterwarnings(
                action,
                message.pattern if message else "",
                category,
                module.pattern if module else "",
                lineno,
            )
        warnings.showwarning = show
        yield


@contextmanager
def logging_restored() -> Iterator[None]:
    """Every logger's handlers, level and propagation as they were; the handlers the command
    added (Hydra's console and ``<job>.log`` file) closed.

    Handlers an earlier test left writing to a stream since closed (a library configured its
    logging under that test's captured stderr) are dropped first: a new process has none.
    """
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        logger.handlers[:] = [h for h in logger.handlers if not writes_to_closed_stream(h)]
    saved = {
        logger: (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in loggers
    }
    try:
        yield
    finally:
        for logger in map(logging.getLogger, ["", *logging.root.manager.loggerDict]):
            handlers, level, propagate, disabled = saved.get(
                logger, ([], logging.NOTSET, True, False)
            )
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


def writes_to_closed_stream(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return bool(getattr(stream, "closed", False))


@contextmanager
def process_state_restored() -> Iterator[None]:
    """``sys.argv``, ``sys.path``, torch's thread count and determinism, and Lightning's idea of
    this process's rank, as they were."""
    argv, path, threads = list(sys.argv), list(sys.path), torch.get_num_threads()
    deterministic, rank = torch.are_deterministic_algorithms_enabled(), rank_zero_only.rank
    try:
        yield
    finally:
        sys.argv, sys.path[:] = argv, path
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        rank_zero_only.rank = rank
        gc.collect()  # a run's data loaders and their worker processes end with it


def clear_hydra() -> None:
    """Hydra's global state empty, as in a new process (the config store, filled on import,
    stays)."""
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def end_wandb() -> None:
    """The command's W&B run finished (a run that failed midway included) and W&B's service and
    settings (read from the command's environment) gone, as when its process ends."""
    finish_loggers()
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
