"""What a command needs of the machine (a GPU, SLURM's srun, a torchvision built for its torch)
is checked first: one line, exit 2, nothing trained or logged."""

from __future__ import annotations

import importlib.metadata
import shutil

import pytest
import torch

from vitlab.cli import companion_install_command


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


def test_a_torchvision_that_does_not_load_with_this_torch_is_named_with_its_fix(cli, tmp_path):
    # what importing a torchvision built for another torch raises (its C++ ops did not register)
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    cli.env["PYTHONPATH"] = str(broken.parent)
    result = cli.in_subprocess("train.py", check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    installed = importlib.metadata.version("torchvision")
    assert line.startswith(
        f"error: torchvision {installed} does not load with torch {torch.__version__} "
        "(operator torchvision::nms does not exist); install the torchvision built for this "
        "torch: pip install --force-reinstall --no-deps 'torchvision==0."
    )
    assert not cli.log_dir.exists()  # refused before Hydra made a run directory


def test_the_torchvision_named_is_the_release_installed_beside_this_torch():
    release = importlib.metadata.version("torchvision").partition("+")[0]
    minor = release.split(".")[1]
    command = companion_install_command("torchvision", torch.__version__)
    assert f"'torchvision==0.{minor}.*'" in command
