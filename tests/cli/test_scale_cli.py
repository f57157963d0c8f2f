"""DDP on CPU processes, multirun sweeps, Optuna and submitit through the real CLI (DDP in a
process of its own: Lightning starts the other rank by running ``sys.argv`` again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.wandb_records import run_contents


def only(paths) -> Path:
    (path,) = list(paths)
    return path


@pytest.mark.slow
def test_multirun_of_ddp_jobs_gives_each_job_its_dir_and_its_own_wandb_run(cli):
    cli.in_subprocess("train.py", "-m", "trainer=ddp_cpu", "debug=limit", "seed=1,2")
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
    result = cli("train.py", "-m", "model.patch_size=3,2", "debug=fdr", "logger=none", check=False)
    assert result.returncode == 1
    assert (
        "job failed, the sweep goes on: model: patch size 3x3 does not divide"
        in result.stdout + result.stderr
    )
    sweep_dir = only((cli.log_dir / "train" / "multiruns").iterdir())
    assert not (sweep_dir / "0" / "metrics.json").exists()
    assert (sweep_dir / "1" / "metrics.json").is_file()


@pytest.mark.slow
def test_optuna_over_ddp_jobs_minimises_an_experiments_loss_with_one_sweep(cli):
    result = cli.in_subprocess(
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


def test_optuna_study_in_sqlite_resumes_where_it_stopped(cli):
    """The sweep extra's storage works: a second sweep on the same database adds its trials to
    the study and reports the best of all of them."""
    import optuna

    sweep = [
        "train.py",
        "hparams_search=vit_optuna",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.storage=sqlite:///study.db",
        "logger=none",
        "callbacks=none",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "test=false",
    ]
    for _ in range(2):
        cli(*sweep)
    study = optuna.load_study(study_name="vit", storage=f"sqlite:///{cli.repo / 'study.db'}")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    sweep_dirs = cli.sweep_dirs()
    scores = [
        json.loads((sweep_dir / "0" / "metrics.json").read_text())["val/acc1_best"]
        for sweep_dir in sweep_dirs
    ]
    assert [trial.value for trial in study.trials] == pytest.approx(scores)
    resumed = yaml.safe_load((sweep_dirs[-1] / "optimization_results.yaml").read_text())
    assert resumed["best_value"] == pytest.approx(max(scores))
