"""End-to-end runs of train.py and eval.py, as a user types them (in a fresh copy, default logger
and paths): what a run prints, writes and reproduces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.helpers.budget import CAP
from vitlab.checkpoint_file import RUN_CONFIG_KEY, read_checkpoint
from vitlab.tasks.base import build_task

# noise a normal run must not print (each was seen on every run once)
NOISE = (
    "litlogger",
    "anonymous setting",
    "LeafSpec",
    "already configured with model summary",
    "Total FLOPs: 0 ",
    "lr-AdamW",
    "Seed set",
    "GPU available",
    "Traceback",
    "Warning",
)


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def test_train_then_eval_reproduces_the_test_metrics_of_the_model_and_its_average(cli):
    overrides = ["debug=limit", "trainer.limit_test_batches=1.0", "task.ema_decay=0.9"]
    cli("train.py", *overrides)
    (run_dir,) = cli.run_dirs()
    assert "effective batch 64" in (run_dir / "train.log").read_text()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    trained = metrics_of(run_dir)
    assert {"test/acc1", "test/acc5", "test/loss", "val/acc1", "val/acc1_best"} <= trained.keys()
    assert {"lr-AdamW/decay", "lr-AdamW/no_decay"} <= trained.keys()  # named parameter groups
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))

    best = next(p for p in (run_dir / "checkpoints").iterdir() if p.name != "last.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["embed_dim"] == 64
    # the average is saved beside the model, and both are tested again by eval.py
    assert any(key.startswith("model_ema.") for key in checkpoint["state_dict"])

    result = cli("eval.py", f"ckpt_path={best}", "data.batch_size=32")
    assert f"tested checkpoint: {best}" in " ".join(result.stderr.split())
    assert "Warning" not in result.stderr and "Be aware" not in result.stderr
    (eval_dir,) = cli.run_dirs("eval")
    # and train.py told not to train tests the checkpoint it is given
    cli("train.py", *overrides, "train=false", f"ckpt_path={best}")
    (_, retest_dir) = cli.run_dirs()
    # accuracies count the same hits; the mean loss may round differently over other batch sizes
    tested = ["test/acc1", "test/acc5", "test_ema/acc1", "test_ema/acc5"]
    for evaluated in (metrics_of(eval_dir), metrics_of(retest_dir)):
        for name in tested:
            assert evaluated[name] == trained[name]
        assert evaluated["test/loss"] == pytest.approx(trained["test/loss"], rel=1e-6)


def test_a_normal_run_prints_the_config_its_progress_the_results_and_nothing_else(cli):
    result = cli("train.py", "debug=fdr")
    output = result.stdout + result.stderr
    assert "config" in output and "DigitsDataModule" in output and "embed_dim: 64" in output
    assert "model: ${model}" in output  # the task shows the model group by reference, once
    assert output.count("embed_dim: 64") == 1
    assert "results" in output and "test/acc1" in output and "val/acc1_best" in output
    assert "run directory:" in output and "tested checkpoint:" in output
    # its output is not a terminal here: progress is log lines, in the run's log too
    assert "epoch 1/1 validated at step 1: val/acc1 " in result.stderr
    (run_dir,) = cli.run_dirs()
    assert "epoch 1/1 validated at step 1: val/acc1 " in (run_dir / "train.log").read_text()
    for noise in NOISE:
        assert noise not in output, noise


def test_vit_b_instantiates_and_takes_one_step_on_digits(cli):
    result = cli(
        "train.py",
        "experiment=none",
        "model=vit_b",
        "data=digits",
        "debug=fdr",
        "data.batch_size=2",
    )
    output = result.stdout + result.stderr
    assert "85.4 M" in output  # ViT-B/16 with 1-channel patches and a 10-class head
    assert "test/acc1" in output


def test_seed_makes_runs_repeatable_including_zero(cli):
    for _ in range(2):
        cli("train.py", "seed=0", "debug=limit", "logger=none", "callbacks=none", "test=false")
    first, second = (metrics_of(d) for d in cli.run_dirs())
    assert first == second


def test_unknown_group_option_lists_the_valid_ones(cli):
    result = cli("train.py", "model=vit_x", check=False)
    assert result.returncode != 0
    assert "vit_x" in result.stderr and "vit_b" in result.stderr and "vit_digits" in result.stderr


def test_patch_size_that_does_not_divide_the_image_fails_before_training(cli):
    result = cli("train.py", "model.patch_size=3", check=False)
    error = (
        "error: model: patch size 3x3 does not divide image size 8x8; "
        "patch sizes that do: [1, 2, 4, 8]"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [error]
    assert cli.run_dirs() == []  # refused before any work: no run directory left behind


def test_missing_checkpoint_is_a_one_line_error(cli):
    result = cli("train.py", "ckpt_path=nope.ckpt", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: ckpt_path: no such file: nope.ckpt"]


def test_training_throughput_and_flops_are_logged(cli):
    every_2_steps = ["callbacks.throughput.window_size=2", "trainer.log_every_n_steps=2"]
    cli("train.py", "debug=limit", "logger=csv", "test=false", *every_2_steps)
    (run_dir,) = cli.run_dirs()
    with (run_dir / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    run_config = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")[RUN_CONFIG_KEY]
    step_flops = build_task(run_config["task"]).training_flops((64, 1, 8, 8))
    logged = [row for row in rows if row["train/device/samples_per_sec"]]
    assert logged
    for row in logged:
        batches_per_s = float(row["train/device/batches_per_sec"])
        assert float(row["train/device/samples_per_sec"]) == pytest.approx(64 * batches_per_s)
        assert float(row["train/device/flops_per_sec"]) == pytest.approx(step_flops * batches_per_s)


def test_early_stopping_ends_a_run_that_stops_improving(cli):
    never_improves = ["callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1"]
    overrides = ["debug=limit", "trainer.max_epochs=6", "logger=csv", "test=false"]
    cli("train.py", "callbacks=[default,early_stopping]", *never_improves, *overrides)
    (run_dir,) = cli.run_dirs()
    with (run_dir / "csv" / "metrics.csv").open() as file:
        validated = [int(row["epoch"]) for row in csv.DictReader(file) if row["val/acc1"]]
    # epoch 0 sets the best; epoch 1 fails to beat it by min_delta, which exhausts patience 1
    assert validated == [0, 1]


def test_train_explains_itself_in_help(cli):
    output = cli("train.py", "--help").stdout
    assert output.startswith("vitlab: train Vision Transformers")
    (models,) = [line for line in output.splitlines() if line.startswith("model: ")]
    assert {"vit_b", "vit_digits", "resnet_fmnist"} <= set(
        models.removeprefix("model: ").split(", ")
    )
    assert "python train.py" in output
    (launchers,) = [line for line in output.splitlines() if line.startswith("hydra/launcher: ")]
    assert launchers.endswith(", local, slurm")


def test_help_imports_neither_torch_nor_lightning_and_names_the_console_script(cli):
    show_help = (
        "import sys\n"
        "from vitlab.cli import train\n"
        "sys.argv = ['vitlab-train', '--help']\n"
        "try:\n"
        "    train.main()\n"
        "finally:\n"
        "    print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    )
    output = cli.in_subprocess("-c", show_help).stdout
    assert output.splitlines()[-1] == "[]"
    assert "vitlab-train experiment=deit_b_imagenet" in output and "train.py" not in output


def test_eval_without_a_checkpoint_says_how_to_call_it(cli):
    result = cli("eval.py", check=False)
    assert result.returncode == 2
    assert "eval.py needs a checkpoint" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_default_run_reaches_96_percent_on_digits(cli):
    cli("train.py")
    (run_dir,) = cli.run_dirs()
    assert metrics_of(run_dir)["test/acc1"] >= 0.96  # measured: 0.964


def test_supervised_training_starts_from_pretrained_weights_with_a_fresh_head(
    cli, digits_checkpoint
):
    # one step at the warmup's first lr, 0: the encoder is still the one loaded
    cli("train.py", f"task.pretrained={digits_checkpoint}", *CAP, "test=false")
    (run_dir,) = cli.run_dirs()
    loaded = read_checkpoint(digits_checkpoint)["state_dict"]
    trained = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    encoder = [key for key in loaded if key.startswith("model.") and ".head." not in key]
    assert encoder and all(torch.equal(trained[key], loaded[key]) for key in encoder)
    assert trained["model.head.weight"].abs().max() < 1e-4  # the fine-tuning head's init


def test_mixed_precision_trains_with_the_recipes_gradient_clipping(cli):
    # bf16-mixed is what trainer.precision resolves to on a GPU; the digits recipe clips at 1.0
    cli("train.py", *CAP, "trainer.precision=bf16-mixed", "logger=csv")
    (run_dir,) = cli.run_dirs()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
