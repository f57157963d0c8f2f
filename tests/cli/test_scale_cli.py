"""DDP on CPU processes, multirun sweeps, Optuna and submitit through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from wandb_records import run_contents


def only(paths) -> Path:
    (path,) = list(paths)
    return path


def test_ddp_on_two_cpu_processes_leaves_one_run_dir_and_one_checkpoint_set(cli):
    result = cli("train.py", "trainer=ddp_cpu", "trainer.devices=2", "debug=limit", "logger=csv")
    output = result.stdout + result.stderr
    assert output.count("DigitsDataModule") == 1  # the config tree, printed by rank 0 only
    assert "Seed set" not in output and "Traceback" not in output  # rank 1 prints nothing
    run_dir = only(cli.run_dirs())
    assert (
        "effective batch 128 = 64 per device x 2 device(s) x 1 node(s) x 1 accumulation"
        in (run_dir / "train.log").read_text()
    )
    best, last = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert best.startswith("epoch_") and last == "last.ckpt"
    assert only((run_dir / "csv").glob("metrics.csv"))
    assert json.loads((run_dir / "metrics.json").read_text())["test/acc1"] >= 0


@pytest.mark.slow
def test_multirun_of_ddp_jobs_gives_each_job_its_dir_and_its_own_wandb_run(cli):
    cli("train.py", "-m", "trainer=ddp_cpu", "debug=limit", "seed=1,2")
    sweep_dir = only((cli.log_dir / "train" / "multiruns").iterdir())
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in job_dirs] == ["0", "1"]
    runs = []
    for job_dir, seed in zip(job_dirs, (1, 2), strict=True):
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        run_file = only(job_dir.glob("wandb/offline-run-*/run-*.wandb"))
        run = run_contents(run_file)
        assert run["id"] == (job_dir / "wandb_id").read_text()
        assert run["group"] == sweep_dir.name
        assert f"seed={seed}" in run["name"]
        assert run["config"]["seed"] == seed
        test_rows = [row for row in run["history"] if "test/acc1" in row]
        assert len(test_rows) == 1  # its own test, not the other job's
        assert test_rows[0]["test/acc1"] == pytest.approx(
            json.loads((job_dir / "metrics.json").read_text())["test/acc1"]
        )
        runs.append(run)
    assert runs[0]["id"] != runs[1]["id"]


def test_a_failing_job_is_reported_and_the_sweep_goes_on(cli):
    result = cli("train.py", "-m", "model.patch_size=3,2", "debug=fdr", "logger=none")
    assert (
        "job failed, the sweep goes on: model: patch size 3x3 does not divide"
        in result.stdout + result.stderr
    )
    sweep_dir = only((cli.log_dir / "train" / "multiruns").iterdir())
    assert not (sweep_dir / "0" / "metrics.json").exists()
    assert (sweep_dir / "1" / "metrics.json").is_file()


@pytest.mark.slow
def test_optuna_sweep_of_three_trials_writes_its_results(cli):
    cli(
        "train.py",
        "hparams_search=vit_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "debug=limit",
        "logger=none",
    )
    sweep_dir = only((cli.log_dir / "train" / "multiruns").iterdir())
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == {
        "task.optimizer.lr",
        "task.optimizer.weight_decay",
        "model.drop_path_rate",
    }
    # each trial scored by its best validation top-1, not its last
    scores = [
        json.loads((sweep_dir / str(n) / "metrics.json").read_text())["val/acc1_best"]
        for n in range(3)
    ]
    assert results["best_value"] == pytest.approx(max(scores))


@pytest.mark.slow
def test_optuna_over_ddp_jobs_minimises_an_experiments_loss_with_one_sweep(cli):
    result = cli(
        "train.py",
        "experiment=digits_mae_pretrain",
        "hparams_search=vit_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "debug=limit",
        "logger=none",
    )
    output = result.stdout + result.stderr
    # each trial launched once, by rank 0: the second rank re-runs its trial, not a sweep
    assert output.count("Launching 1 jobs locally") == 2
    sweep_dir = only((cli.log_dir / "train" / "multiruns").iterdir())
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    losses = [
        json.loads((sweep_dir / str(n) / "metrics.json").read_text())["val/loss_best"]
        for n in range(2)
    ]
    assert results["best_value"] == pytest.approx(min(losses))


def test_submitit_local_launcher_runs_a_job(cli):
    cli("train.py", "-m", "hydra/launcher=local", "debug=fdr", "logger=none")
    sweep_dir = only((cli.log_dir / "train" / "multiruns").iterdir())
    assert (sweep_dir / "0" / "metrics.json").is_file()
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl"))


def test_a_multirun_as_typed_gives_each_job_its_dir_and_offline_wandb_run(cli):
    cli("train.py", "-m", "debug=fdr", "task.optimizer.lr=1e-3,5e-4")
    sweep_dir = only(cli.sweep_dirs())
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in job_dirs] == ["0", "1"]
    runs = [run_contents(only(d.glob("wandb/offline-run-*/run-*.wandb"))) for d in job_dirs]
    assert runs[0]["id"] != runs[1]["id"]
    assert [run["config"]["task"]["optimizer"]["lr"] for run in runs] == [1e-3, 5e-4]
