"""Resume exactly, fail clearly: interrupted runs and bad input through the real CLI."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest
import torch

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


@pytest.mark.slow
# a kill with loader workers alive, and a polite stop without them
@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGTERM, 0), (signal.SIGKILL, 2)])
def test_interrupted_run_resumes_to_the_same_weights(cli, tmp_path, sig, workers):
    run = (*RUN, f"data.num_workers={workers}")
    uninterrupted, interrupted = tmp_path / "a", tmp_path / "b"
    cli("train.py", f"hydra.run.dir={uninterrupted}", *run)
    first_checkpoint = interrupted / "checkpoints" / "last.ckpt"
    cli.stopped(sig, "train.py", f"hydra.run.dir={interrupted}", *run, when=first_checkpoint.exists)
    resumed_from = last_checkpoint(interrupted)["global_step"]
    assert resumed_from < last_checkpoint(uninterrupted)["global_step"]
    cli("train.py", f"hydra.run.dir={interrupted}", "ckpt_path=auto", *run)
    # the resumed process trained only the steps after its checkpoint (its own CSV segment)
    with (interrupted / "csv" / "metrics.csv").open() as file:
        steps = [int(row["step"]) for row in csv.DictReader(file) if row["train/loss"]]
    assert steps and min(steps) >= resumed_from

    expected, resumed = last_checkpoint(uninterrupted), last_checkpoint(interrupted)
    assert resumed["global_step"] == expected["global_step"] == 5 * 6
    assert resumed["lr_schedulers"][0]["last_epoch"] == expected["lr_schedulers"][0]["last_epoch"]
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=1e-5, atol=1e-6)


def test_a_run_resumed_in_place_keeps_its_earlier_csv_metrics(cli, tmp_path):
    run_dir, run = tmp_path / "run", ("debug=limit", "logger=csv", "test=false")
    cli("train.py", f"hydra.run.dir={run_dir}", *run)
    # more epochs than it ran with: a new run from its checkpoint, here in the same directory
    last = run_dir / "checkpoints" / "last.ckpt"
    cli("train.py", f"hydra.run.dir={run_dir}", f"ckpt_path={last}", "trainer.max_epochs=3", *run)

    def validated_epochs(name: str) -> list[int]:
        with (run_dir / "csv" / name).open() as file:
            return [int(row["epoch"]) for row in csv.DictReader(file) if row["val/acc1"]]

    assert validated_epochs("metrics.0.csv") == [0, 1]
    assert validated_epochs("metrics.csv") == [2]


def test_every_checkpoint_loads_with_weights_only(digits_run: Path):
    checkpoints = list((digits_run / "checkpoints").glob("*.ckpt"))
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
    assert cli.run_dirs() == []  # refused before any work: no run directory left behind


def test_a_missing_pretrained_checkpoint_is_a_one_line_error(cli, tmp_path):
    missing = tmp_path / "mae.ckpt"
    result = cli(
        "train.py", "experiment=digits_mae_finetune", f"task.pretrained={missing}", check=False
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: task.pretrained: no such file: {missing}"
    )


def test_resuming_into_data_with_another_class_count_is_refused(
    cli, digits_checkpoint: Path, image_tree
):
    root = image_tree("three_classes", {"train": 2, "val": 1})
    result = cli(
        "train.py",
        "experiment=none",
        "data=imagefolder",
        f"data.root={root}",
        "data.batch_size=2",
        f"ckpt_path={digits_checkpoint}",
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("was trained for 10 classes, but the data has 3")
    )


def test_missing_dataset_root_names_the_expected_layout(cli, tmp_path):
    result = cli(
        "train.py",
        "experiment=none",
        "data=imagenet",
        f"data.root={tmp_path / 'nowhere'}",
        check=False,
    )
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert (
        last_line.startswith("error: data: ")
        and "{train,val}/<class>/<image>" in last_line
        and str(tmp_path / "nowhere") in last_line
    )


def test_a_training_split_smaller_than_a_batch_is_refused_before_training(cli, image_tree):
    root = image_tree("small", {"train": 20, "val": 2})  # 60 training images, batch 128
    result = cli(
        "train.py", "experiment=none", "data=imagefolder", f"data.root={root}", check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.batch_size: the train split has 60 images, fewer than one batch of 128 "
        "(training drops incomplete batches); set data.batch_size=60 or less"
    ]
    assert cli.run_dirs() == []  # nothing left behind


def test_an_empty_validation_split_is_refused_before_training(cli, image_tree):
    root = image_tree("no_val", {"train": 4})
    result = cli(
        "train.py",
        "experiment=none",
        "data=imagefolder",
        f"data.root={root}",
        "data.batch_size=2",
        "data.val_fraction=0.01",  # holds out round(12 * 0.01) = 0 images
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: data: the val split is empty"]
    assert cli.run_dirs() == []  # nothing left behind


def test_auto_resume_without_a_checkpoint_says_it_starts_from_scratch(cli, tmp_path):
    run_dir = tmp_path / "new_run"
    result = cli("train.py", "ckpt_path=auto", f"hydra.run.dir={run_dir}", "debug=fdr")
    assert f"ckpt_path=auto: no {run_dir}/checkpoints/last.ckpt yet" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (
            ["+trainer.max_epoch=3"],
            "error: trainer.max_epoch: Trainer takes no argument 'max_epoch'; "
            "did you mean max_epochs or min_epochs or max_steps?",
        ),
        (
            ["data.batch_size=0"],
            "error: data.batch_size: expected a whole number of at least 1, got 0",
        ),
        (
            ["task.monitor=val/acc9"],
            "error: task.monitor: the run logs no 'val/acc9' at every validation; "
            "choose one of ['val/loss', 'val/acc1', 'val/acc5']",
        ),
    ],
    ids=["unknown-trainer-argument", "zero-batch", "unlogged-monitor"],
)
def test_bad_settings_are_one_line_errors_before_any_logger_run(cli, overrides, error):
    result = cli("train.py", *overrides, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [error]
    assert cli.run_dirs() == []  # refused before any work: no run directory left behind


def test_a_file_where_the_checkpoints_go_is_refused_before_training(cli, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("not a folder")
    result = cli("train.py", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: paths.output_dir: cannot write to {run_dir}/checkpoints: File exists"
    ]
    assert not (run_dir / "wandb").exists() and not (run_dir / "metrics.json").exists()


def test_debug_runs_log_offline_even_with_credentials(cli):
    # a W&B API key and a login for the W&B cloud: a normal run would log online
    (Path(cli.env["HOME"]) / ".netrc").write_text(
        "machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n"
    )
    cli.env["WANDB_API_KEY"] = "0" * 40
    cli("train.py", "debug=fdr")
    (run_dir,) = cli.run_dirs()
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert not list(run_dir.glob("wandb/run-*"))
