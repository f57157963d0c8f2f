"""``ckpt_path=auto hydra.run.dir=<run>`` resumes a run with the overrides it ran with, and
refuses one that differs, naming it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

from vitlab.cli import train


@pytest.fixture
def train_here(monkeypatch, tmp_path):
    """``train_here(*overrides)``: vitlab-train in this process, from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)

    def run(*overrides: str) -> None:
        # a run rewrites sys.argv for the DDP ranks it may start (vitlab.distributed)
        monkeypatch.setattr(sys, "argv", ["vitlab-train", *overrides])
        GlobalHydra.instance().clear()
        train.main()

    return run


def stored_overrides(run_dir: Path) -> list[str]:
    return yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())


def test_a_resume_into_a_run_directory_uses_that_runs_overrides(train_here, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train_here("debug=fdr", "logger=none", "seed=7", f"hydra.run.dir={run_dir}")
    train_here("debug=fdr", "ckpt_path=auto", f"hydra.run.dir={run_dir}")
    assert stored_overrides(run_dir) == ["logger=none", "seed=7", "debug=fdr", "ckpt_path=auto"]

    with pytest.raises(SystemExit) as refused:
        train_here("seed=8", "ckpt_path=auto", f"hydra.run.dir={run_dir}")
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: seed: {run_dir} ran with seed=7, and ckpt_path=auto resumes it with its own "
        f"settings: leave out seed=8, or start a new run from its checkpoint with "
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    )
