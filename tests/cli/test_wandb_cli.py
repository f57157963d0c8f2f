"""W&B through the real CLI, as a new user has it (offline, no credentials): what a run prints,
and what its offline run files hold, read back from disk, also after an interruption."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch

import vitlab
from tests.helpers.wandb_records import run_contents
from vitlab.loggers import STEP_KEY as STEP
from vitlab.loggers import history_rows

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


@pytest.mark.slow
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
    (run_folder,) = run_dir.glob("wandb/offline-run-*")
    wandb_lines = [line for line in output.splitlines() if "W&B" in line]
    assert wandb_lines == [f"W&B logs offline; upload the run with `wandb sync {run_folder}`"]
    (run,) = segments(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (test_row,) = [row for row in run["history"] if "test/acc1" in row]
    assert test_row["test/acc1"] == pytest.approx(metrics["test/acc1"])
    assert run["id"] == (run_dir / "wandb_id").read_text()


def test_log_model_aliases_the_monitored_checkpoint_best_and_the_last_latest(cli):
    cli(
        "train.py",
        "logger.wandb.log_model=true",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "test=false",
    )
    (run_dir,) = cli.run_dirs()
    (run,) = segments(run_dir)
    # logged at the end of the run, the best first: W&B's "latest" ends on last.ckpt
    best, last = [artifact for artifact in run["artifacts"] if artifact["type"] == "model"]
    accuracies = [row["val/acc1"] for row in run["history"] if "val/acc1" in row]
    best_epoch = accuracies.index(max(accuracies))
    # W&B adds "latest" to every version it logs (in no set order); the last one logged keeps it
    assert set(best["aliases"]) == {"best", "latest"} and last["aliases"] == ["latest"]
    assert best["metadata"] == {
        "original_filename": f"epoch_{best_epoch:03d}.ckpt",
        "epoch": best_epoch,
        "global_step": 2 * (best_epoch + 1),
        "monitor": "val/acc1",
        "mode": "max",
        "score": pytest.approx(max(accuracies)),
    }
    assert last["metadata"] == {"original_filename": "last.ckpt", "epoch": 2, "global_step": 6}
    staged = Path(best["files"]["model.ckpt"]).read_bytes()
    assert staged == (run_dir / "checkpoints" / f"epoch_{best_epoch:03d}.ckpt").read_bytes()


def test_the_run_logs_its_config_once_without_machine_paths_and_every_row_on_the_trainer_step(
    cli,
):
    cli(
        "train.py",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
    )
    (run_dir,) = cli.run_dirs()
    (run,) = segments(run_dir)
    config = run["config"]
    assert run["job_type"] == "classification"
    assert "paths" not in config and str(cli.repo) not in json.dumps(config)
    assert config["logger"]["wandb"]["save_dir"] == str(run_dir.relative_to(cli.repo))
    assert config["task"]["model"] == "${model}" and config["model"]["embed_dim"] > 0
    package = Path(vitlab.__file__).parent
    commit = subprocess.run(
        ["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta = config["meta"]
    assert meta["vitlab_version"] == vitlab.__version__
    assert meta["git_commit"] in (None, commit, f"{commit}-dirty")
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert (
        meta["params"]
        == meta["trainable_params"]
        == sum(value.numel() for key, value in weights.items() if key.startswith("model."))
    )
    # the evaluation loops' throughput rows sit at the step their validation or test followed
    steps = {
        key: {row[STEP] for row in run["history"] if key in row}
        for key in ("validate/samples", "test/samples")
    }
    assert steps == {"validate/samples": {2, 5}, "test/samples": {6}}


# three epochs of 12 steps, a row every step: the first checkpoint is written after step 11
RUN = (
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=12",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "test=false",
)
STEPS = set(range(3 * 12))


def past_first_checkpoint(run_dir: Path) -> bool:
    if not (run_dir / "checkpoints" / "last.ckpt").exists():
        return False
    return any(
        json.loads(row.get("epoch", "0")) >= 1
        for path in run_dir.glob("wandb/offline-run-*/run-*.wandb")
        for row in history_rows(path)
    )


def steps(segment: dict) -> set[int]:
    return {row[STEP] for row in segment["history"] if STEP in row}


def logged_metrics(segment: dict) -> set[tuple[int, str]]:
    """(step, metric name) of every value the segment logged; the epoch rides along in rows."""
    return {
        (row[STEP], name)
        for row in segment["history"]
        for name in row
        if not name.startswith("_") and name not in (STEP, "epoch")
    }


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_run_resumes_its_wandb_run_without_logging_a_step_twice(cli, tmp_path, sig):
    run_dir = tmp_path / "run"
    # stopped while it trains on, at a step a resumed run replays
    stderr = cli.stopped(
        sig,
        "train.py",
        f"hydra.run.dir={run_dir}",
        *RUN,
        when=lambda: past_first_checkpoint(run_dir),
    ).stderr
    resume = ["train.py", *RUN, "ckpt_path=auto", f"hydra.run.dir={run_dir}"]
    if sig == signal.SIGINT:
        hint = "interrupted; continue from the last checkpoint with: python " + " ".join(resume)
        assert hint in stderr.splitlines()
    cli(*resume)

    first, resumed = segments(run_dir)
    assert first["id"] == resumed["id"] == (run_dir / "wandb_id").read_text()
    # the interrupted part kept every step it logged, past its first checkpoint
    interrupted_at = max(steps(first))
    assert steps(first) >= set(range(interrupted_at + 1)) and interrupted_at >= 12
    # the resumed part logged what was missing to the last step, and nothing a second time:
    # only the step the interruption cut short can have rows in both (its other metrics)
    assert steps(first) | steps(resumed) == STEPS
    assert steps(first) & steps(resumed) <= {interrupted_at}
    assert not logged_metrics(first) & logged_metrics(resumed)
