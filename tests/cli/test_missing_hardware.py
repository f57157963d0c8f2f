"""What a command needs of the machine (a GPU, SLURM's srun) is checked first: one line, exit
2, nothing trained or logged."""

from __future__ import annotations

import shutil

import pytest
import torch


def refusal(cli, *overrides: str) -> str:
    """The one line ``train.py <overrides>`` exits with (code 2)."""
    result = cli("train.py", *overrides, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_is_refused(trainer, cli):
    line = refusal(cli, f"trainer={trainer}")
    assert line.startswith("error: trainer.accelerator: gpu asked for, but torch ")
    assert line.endswith("sees no CUDA GPU here; train on the CPU with trainer=cpu")
    assert cli.run_dirs() == []  # refused before any work: no run directory left behind


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_the_slurm_launcher_without_srun_is_refused(cli):
    line = refusal(cli, "-m", "hydra/launcher=slurm", "debug=fdr")
    assert line == (
        "error: hydra/launcher: slurm needs srun, not found on this machine: submit from a SLURM "
        "cluster's login node, or try the same launcher here with hydra/launcher=local"
    )
    assert not cli.log_dir.exists()
