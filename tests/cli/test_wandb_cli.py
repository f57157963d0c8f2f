"""W&B through the real CLI, as a new user has it (offline, no credentials): what a run prints,
and what its offline run files hold, read back from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wandb_records import run_contents

# what W&B printed on every run before vitlab quietened it
WANDB_NOISE = (
    "The anonymous setting has no effect",
    "Tracking run with wandb version",
    "W&B syncing is set to",
    "Run data is saved locally",
    "wandb leet",
    "Run history:",
    "Run summary:",
    "You can sync this run to the cloud",
    "Find logs at",
)


def segments(run_dir: Path) -> list[dict]:
    """The contents of the run's offline W&B segments, oldest first."""
    return [run_contents(path) for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]


def test_a_default_run_prints_one_wandb_line_and_logs_its_test_metrics_offline(cli):
    result = cli(
        "train.py",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    )
    output = result.stdout + result.stderr
    assert not [noise for noise in WANDB_NOISE if noise in output]
    assert not [line for line in output.splitlines() if line.startswith("wandb:")]
    (run_dir,) = cli.run_dirs()
    wandb_lines = [line for line in output.splitlines() if "W&B" in line]
    assert wandb_lines == [
        "W&B: no credentials, logging offline; upload later with "
        f"`wandb sync {run_dir}/wandb/offline-run-*`"
    ]
    (run,) = segments(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (test_row,) = [row for row in run["history"] if "test/acc1" in row]
    assert test_row["test/acc1"] == pytest.approx(metrics["test/acc1"])
    assert run["id"] == (run_dir / "wandb_id").read_text()
