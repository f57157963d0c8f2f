"""What a command needs of the machine (a GPU, SLURM's srun) is checked first: one line, exit
2, nothing trained or logged."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from vitlab.cli import train


def refusal(monkeypatch, tmp_path, capsys, *overrides: str) -> str:
    """The one line ``vitlab-train <overrides>`` exits with (code 2), run from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vitlab-train", *overrides])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as refused:
        train.main()
    assert refused.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_is_refused(trainer, monkeypatch, tmp_path, capsys):
    line = refusal(monkeypatch, tmp_path, capsys, f"trainer={trainer}", "logger=none")
    assert line.startswith("error: trainer.accelerator: gpu asked for, but torch ")
    assert line.endswith("sees no CUDA GPU here; train on the CPU with trainer=cpu")
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert not any((run_dir / name).exists() for name in ("checkpoints", "metrics.json"))


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_the_slurm_launcher_without_srun_is_refused(monkeypatch, tmp_path, capsys):
    line = refusal(monkeypatch, tmp_path, capsys, "-m", "hydra/launcher=slurm", "debug=fdr")
    assert line == (
        "error: hydra/launcher: slurm needs srun, not found on this machine: submit from a SLURM "
        "cluster's login node, or try the same launcher here with hydra/launcher=local"
    )
    assert not (tmp_path / "logs").exists()
