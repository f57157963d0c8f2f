"""End-to-end runs of train.py and eval.py, as a user types them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vitlab.callbacks.throughput import training_flops


def run_dirs(log_dir: Path, script: str = "train") -> list[Path]:
    return sorted((log_dir / script / "runs").iterdir())


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "ema", [[], ["callbacks=[default,ema]", "callbacks.ema.decay=0.9"]], ids=["plain", "ema"]
)
def test_train_then_eval_reproduces_the_test_metrics(cli, ema: list[str]):
    overrides = ["debug=limit", "trainer.limit_test_batches=1.0", "logger=csv", *ema]
    result = cli("train.py", *overrides)
    assert "effective batch 64" in result.stdout + result.stderr
    (run_dir,) = run_dirs(cli.log_dir)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    trained = metrics_of(run_dir)
    assert {"test/acc1", "test/acc5", "test/loss", "val/acc1"} <= trained.keys()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()

    best = next(p for p in (run_dir / "checkpoints").iterdir() if p.name != "last.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["embed_dim"] == 64
    # with the EMA, the state_dict holds the averaged weights that both tests must evaluate
    assert ("current_model_state" in checkpoint) == bool(ema)

    cli("eval.py", f"ckpt_path={best}", "+data.batch_size=32")
    (eval_dir,) = run_dirs(cli.log_dir, "eval")
    # and train.py told not to train tests the checkpoint it is given
    cli("train.py", *overrides, "train=false", f"ckpt_path={best}")
    (_, retest_dir) = run_dirs(cli.log_dir)
    for evaluated in (metrics_of(eval_dir), metrics_of(retest_dir)):
        for name in ("test/acc1", "test/acc5", "test/loss"):
            assert evaluated[name] == pytest.approx(trained[name], abs=1e-6)


def test_config_tree_and_results_summary_are_printed(cli):
    result = cli("train.py", "debug=fdr", "logger=none")
    output = result.stdout + result.stderr
    assert "config" in output and "DigitsDataModule" in output and "embed_dim: 64" in output
    assert "results" in output and "test/acc1" in output


def test_vit_b_instantiates_and_takes_one_step_on_digits(cli):
    result = cli(
        "train.py", "model=vit_b", "data=digits", "debug=fdr", "data.batch_size=2", "logger=none"
    )
    output = result.stdout + result.stderr
    assert "85.4 M" in output  # ViT-B/16 with 1-channel patches and a 10-class head
    assert "test/acc1" in output


def test_seed_makes_runs_repeatable_including_zero(cli):
    for _ in range(2):
        cli("train.py", "seed=0", "debug=limit", "logger=none", "callbacks=none", "test=false")
    first, second = (metrics_of(d) for d in run_dirs(cli.log_dir))
    assert first == second


def test_unknown_group_option_lists_the_valid_ones(cli):
    result = cli("train.py", "model=vit_x", check=False)
    assert result.returncode != 0
    assert "vit_x" in result.stderr and "vit_b" in result.stderr and "vit_digits" in result.stderr


def test_patch_size_that_does_not_divide_the_image_fails_before_training(cli):
    result = cli("train.py", "model.patch_size=3", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model: patch size 3x3 does not divide image size 8x8; patch sizes that do: [1, 2, 4, 8]"
    )
    (run_dir,) = run_dirs(cli.log_dir)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_missing_checkpoint_is_a_one_line_error(cli, tmp_path):
    result = cli("train.py", f"ckpt_path={tmp_path / 'nope.ckpt'}", check=False)
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: ckpt_path: no such file: {tmp_path / 'nope.ckpt'}"
    )


def test_training_throughput_and_flops_are_logged(cli):
    every_2_steps = ["callbacks.throughput.window_size=2", "trainer.log_every_n_steps=2"]
    cli("train.py", "debug=limit", "logger=csv", "test=false", *every_2_steps)
    (run_dir,) = run_dirs(cli.log_dir)
    with (run_dir / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    step_flops = training_flops(cfg.task, cfg.model, batch_size=64)
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
    (run_dir,) = run_dirs(cli.log_dir)
    with (run_dir / "csv" / "metrics.csv").open() as file:
        validated = [int(row["epoch"]) for row in csv.DictReader(file) if row["val/acc1"]]
    # epoch 0 sets the best; epoch 1 fails to beat it by min_delta, which exhausts patience 1
    assert validated == [0, 1]


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ("train.py", "vitlab: train Vision Transformers"),
        ("eval.py", "eval.py: test (or validate) a checkpoint"),
        ("predict.py", "predict.py: top-k classes of image files"),
    ],
)
def test_each_entry_point_explains_itself_in_help(cli, script: str, says: str):
    output = cli(script, "--help").stdout
    assert output.startswith(says) and "model: vit_b" in output and f"python {script}" in output


def test_eval_without_a_checkpoint_says_how_to_call_it(cli):
    result = cli("eval.py", check=False)
    assert result.returncode == 2
    assert "eval.py needs a checkpoint" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_default_run_reaches_95_percent_on_digits(cli):
    cli("train.py", "logger=csv", timeout=900)
    (run_dir,) = run_dirs(cli.log_dir)
    assert metrics_of(run_dir)["test/acc1"] >= 0.95
