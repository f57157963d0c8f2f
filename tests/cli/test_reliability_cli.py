"""Resume exactly, fail clearly: interrupted runs and bad input through the real CLI."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vitlab.data.synthetic import write_image_tree

ROOT = Path(__file__).resolve().parents[2]
RUN = (
    "debug=limit",
    "trainer.max_epochs=5",
    "trainer.limit_train_batches=6",
    "logger=csv",
    "test=false",
    "seed=3",
)


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def start_and_interrupt(run_dir: Path, log_dir: Path, sig: signal.Signals, *run: str) -> None:
    """Start a run, wait for its first checkpoint, then send ``sig`` while it trains on."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"paths.log_dir={log_dir}",
        f"hydra.run.dir={run_dir}",
        *run,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(sig)
    process.wait(timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "workers"), [(signal.SIGKILL, 0), (signal.SIGTERM, 0), (signal.SIGKILL, 2)]
)
def test_interrupted_run_resumes_to_the_same_weights(cli, tmp_path, sig, workers):
    run = (*RUN, f"data.num_workers={workers}")
    uninterrupted, interrupted = tmp_path / "a", tmp_path / "b"
    cli("train.py", f"hydra.run.dir={uninterrupted}", *run)
    start_and_interrupt(interrupted, cli.log_dir, sig, *run)
    assert (
        last_checkpoint(interrupted)["global_step"] < last_checkpoint(uninterrupted)["global_step"]
    )
    cli("train.py", f"hydra.run.dir={interrupted}", "ckpt_path=auto", *run)

    expected, resumed = last_checkpoint(uninterrupted), last_checkpoint(interrupted)
    assert resumed["global_step"] == expected["global_step"] == 5 * 6
    assert resumed["lr_schedulers"][0]["last_epoch"] == expected["lr_schedulers"][0]["last_epoch"]
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=1e-5, atol=1e-6)


def test_a_run_resumed_in_place_keeps_its_earlier_csv_metrics(cli, tmp_path):
    run_dir, run = tmp_path / "run", ("debug=limit", "logger=csv", "test=false")
    cli("train.py", f"hydra.run.dir={run_dir}", *run)
    cli("train.py", f"hydra.run.dir={run_dir}", "ckpt_path=auto", "trainer.max_epochs=3", *run)

    def validated_epochs(name: str) -> list[int]:
        with (run_dir / "csv" / name).open() as file:
            return [int(row["epoch"]) for row in csv.DictReader(file) if row["val/acc1"]]

    assert validated_epochs("metrics.0.csv") == [0, 1]
    assert validated_epochs("metrics.csv") == [2]


def test_every_checkpoint_loads_with_weights_only(cli):
    cli("train.py", "debug=limit", "logger=none")
    (run_dir,) = (cli.log_dir / "train" / "runs").iterdir()
    checkpoints = list((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2
    for path in checkpoints:
        checkpoint = torch.load(path, weights_only=True)
        assert isinstance(checkpoint["hyper_parameters"], dict)


def test_bad_type_is_a_one_line_error_before_training(cli):
    result = cli("train.py", "task.optimizer.lr=abc", check=False)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: task.optimizer.lr: expected a number, got 'abc'"
    )
    (run_dir,) = (cli.log_dir / "train" / "runs").iterdir()
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


def test_a_missing_pretrained_checkpoint_is_a_one_line_error(cli, tmp_path):
    missing = tmp_path / "mae.ckpt"
    result = cli(
        "train.py", "experiment=digits_mae_finetune", f"task.pretrained={missing}", check=False
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: task.pretrained: no such file: {missing}"
    )


def test_resuming_into_data_with_another_class_count_is_refused(cli, tmp_path):
    cli("train.py", "debug=limit", "trainer.max_epochs=1", "logger=none", "test=false")
    (run_dir,) = (cli.log_dir / "train" / "runs").iterdir()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    root = tmp_path / "three_classes"
    write_image_tree(root, {"train": 2, "val": 1})
    result = cli(
        "train.py",
        "data=imagefolder",
        f"data.root={root}",
        "model.img_size=8",
        f"ckpt_path={ckpt}",
        "data.num_workers=0",
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("was trained for 10 classes, but the data has 3")
    )


def test_missing_dataset_root_names_the_expected_layout(cli, tmp_path):
    result = cli("train.py", "data=imagenet", f"data.root={tmp_path / 'nowhere'}", check=False)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert (
        last_line.startswith("error: data: ")
        and "{train,val}/<class>/<image>" in last_line
        and str(tmp_path / "nowhere") in last_line
    )
