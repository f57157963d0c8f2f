"""The wheel is all a user needs: built, installed into a fresh virtual environment, its
``vitlab-train`` trains from any directory with the configs it carries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a checkout holds at its top besides its sources
OUTPUTS = {".git", ".venv", "build", "dist", "logs", "data", "wandb", "outputs", "multirun",
           "exported", ".pytest_cache", ".ruff_cache"}  # fmt: skip


def outputs(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree``'s ``ignore``: the checkout's outputs and caches, not its sources."""
    top = Path(folder) == ROOT
    return {
        name
        for name in names
        if (top and name in OUTPUTS) or name == "__pycache__" or name.endswith(".egg-info")
    }


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_installs_a_vitlab_train_that_runs_outside_the_checkout(tmp_path: Path):
    # built from a copy: an in-tree build leaves build/ behind, whose stale files a later
    # wheel would carry
    source = shutil.copytree(ROOT, tmp_path / "source", ignore=outputs)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--wheel-dir", tmp_path / "wheels", source)  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("vitlab-*.whl")

    # a fresh environment whose dependencies are this one's (a .pth file: no downloads); its
    # own site-packages, where the wheel goes, comes first on its path
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "dependencies.pth").write_text("\n".join(sorted(ours)))
    # --force-reinstall: a vitlab of the same version may be installed here (editable), which
    # pip leaves alone (outside the new environment)
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
        "--force-reinstall", wheel)  # fmt: skip

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    user = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "WANDB_"))}
    user |= {"HOME": str(tmp_path / "home")}
    where = run(python, "-c", "import vitlab; print(vitlab.__file__)", cwd=elsewhere, env=user)
    assert where.stdout.startswith(str(env_dir))
    run(env_dir / "bin" / "vitlab-train", "debug=fdr", cwd=elsewhere, env=user)
    (run_dir,) = (elsewhere / "logs" / "train" / "runs").iterdir()
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "train.log").is_file()
