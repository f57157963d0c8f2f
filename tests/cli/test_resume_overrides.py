"""``ckpt_path=auto hydra.run.dir=<run>`` resumes a run with the overrides it ran with, and
refuses one that differs, naming it."""

from __future__ import annotations

from pathlib import Path

import yaml


def stored_overrides(run_dir: Path) -> list[str]:
    return yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())


def test_a_resume_into_a_run_directory_uses_that_runs_overrides(cli):
    run_dir = cli.repo / "run"
    cli("train.py", "debug=fdr", "logger=none", "seed=7", f"hydra.run.dir={run_dir}")
    cli("train.py", "debug=fdr", "ckpt_path=auto", f"hydra.run.dir={run_dir}")
    assert stored_overrides(run_dir) == ["logger=none", "seed=7", "debug=fdr", "ckpt_path=auto"]

    refused = cli("train.py", "seed=8", "ckpt_path=auto", f"hydra.run.dir={run_dir}", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: seed: {run_dir} ran with seed=7, and ckpt_path=auto resumes it with its own "
        f"settings: leave out seed=8, or start a new run from its checkpoint with "
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    )
