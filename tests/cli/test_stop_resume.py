"""A run stopped by a signal says how to continue, exits as a shell reports the signal, and
resumes from its last checkpoint with the line it printed."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

RUN = ("debug=limit", "trainer.max_epochs=5", "trainer.limit_train_batches=6", "test=false")
HINT = "interrupted; continue from the last checkpoint with: "


def stop_after_first_checkpoint(cli, run_dir: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start ``python train.py`` in ``run_dir``, send ``sig`` once its first checkpoint is
    written; return its exit code and what it wrote on stderr."""
    command = [sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}"]
    stderr = run_dir.parent / "stderr.txt"
    with stderr.open("w") as file:
        process = subprocess.Popen(
            command, cwd=cli.repo, env=cli.env, stdout=subprocess.DEVNULL, stderr=file
        )
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "last.ckpt").exists():
            assert process.poll() is None, stderr.read_text()[-4000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(sig)
        returncode = process.wait(timeout=120)
    return returncode, stderr.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_exits_with_the_signal_and_resumes_with_its_hint(
    cli, tmp_path, sig, exit_code
):
    run_dir = tmp_path / "run"
    returncode, stderr = stop_after_first_checkpoint(cli, run_dir, sig)
    assert returncode == exit_code, stderr[-4000:]
    (hint,) = [line for line in stderr.splitlines() if line.startswith(HINT)]
    python, script, *arguments = shlex.split(hint.removeprefix(HINT))
    assert (python, script) == ("python", "train.py")
    assert arguments[-2:] == ["ckpt_path=auto", f"hydra.run.dir={run_dir}"]
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped_at["global_step"] < 5 * 6

    cli(script, *arguments)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5 * 6
