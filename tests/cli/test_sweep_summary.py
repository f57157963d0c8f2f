"""A multirun with failed jobs ends with "N of M jobs failed", each job's reason, and exit 1,
whichever launcher ran them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from joblib.externals.loky import get_reusable_executor
from omegaconf import OmegaConf


def test_a_sweep_with_a_failed_job_names_it_and_exits_non_zero(cli):
    result = cli("train.py", "-m", "model.patch_size=3,2", "debug=fdr", "logger=none", check=False)
    assert result.returncode == 1
    summary = result.stderr.splitlines()[-2:]
    assert summary[0] == "1 of 2 jobs failed:"
    assert summary[1].startswith(
        "  0 (model.patch_size=3 debug=fdr logger=none): model: patch size"
    )
    (sweep_dir,) = cli.sweep_dirs()
    assert (sweep_dir / "1" / "metrics.json").is_file()


@pytest.fixture
def loky_workers_stopped() -> Iterator[None]:
    """joblib's worker processes stopped after the test (they idle for minutes otherwise)."""
    yield
    get_reusable_executor().shutdown(wait=True)


def test_a_joblib_sweep_runs_its_jobs_in_parallel_processes_and_sums_them_up(
    cli, loky_workers_stopped
):
    result = cli(
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.patch_size=3,2",
        "debug=fdr",
        "logger=none",
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-2] == "1 of 2 jobs failed:"
    (sweep_dir,) = cli.sweep_dirs()
    assert (sweep_dir / "1" / "metrics.json").is_file()
    launcher = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2
