"""Shared test setup: offline W&B, a small thread count, and a runner for the CLI entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as wandb_records

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
torch.set_num_threads(1)


def run_cli(
    script: str, *overrides: str, log_dir: Path, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` from the repository root, logging under ``log_dir``."""
    # overrides first: after "-m" argparse takes every remaining argument as an override
    command = [sys.executable, str(ROOT / script), *overrides, f"paths.log_dir={log_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture
def cli(tmp_path: Path):
    """``cli("train.py", "debug=fdr")`` runs an entry point with logs in a temporary directory."""

    def runner(script: str, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
        return run_cli(script, *overrides, log_dir=tmp_path / "logs", **kwargs)

    runner.log_dir = tmp_path / "logs"
    return runner
