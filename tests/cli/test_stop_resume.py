"""A run stopped by a signal says how to continue, exits as a shell reports the signal, and
resumes from its last checkpoint with the line it printed."""

from __future__ import annotations

import shlex
import signal

import pytest
import torch

RUN = ("debug=limit", "trainer.max_epochs=5", "trainer.limit_train_batches=6", "test=false")
HINT = "interrupted; continue from the last checkpoint with: "


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_exits_with_the_signal_and_resumes_with_its_hint(
    cli, tmp_path, sig, exit_code
):
    run_dir = tmp_path / "run"
    first_checkpoint = run_dir / "checkpoints" / "last.ckpt"
    stopped = cli.stopped(
        sig, "train.py", *RUN, f"hydra.run.dir={run_dir}", when=first_checkpoint.exists
    )
    assert stopped.returncode == exit_code, stopped.stderr[-4000:]
    (hint,) = [line for line in stopped.stderr.splitlines() if line.startswith(HINT)]
    python, script, *arguments = shlex.split(hint.removeprefix(HINT))
    assert (python, script) == ("python", "train.py")
    assert arguments[-2:] == ["ckpt_path=auto", f"hydra.run.dir={run_dir}"]
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped_at["global_step"] < 5 * 6

    cli(script, *arguments)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5 * 6
