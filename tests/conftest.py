"""Shared fixtures: tiny models and task configs, composed run configs, real image trees, and
the entry points run as a user runs them (from a fresh copy of the repository, default paths,
default logger, no W&B credentials).

Nothing here changes how vitlab behaves: no environment variable or config value is set for
the whole suite. A test that needs a setting passes it where it can be read.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import vitlab.config  # noqa: F401  (the resolvers the config groups use)
from vitlab.cli import CONFIG_PATH
from vitlab.data.synthetic import write_image_tree
from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.models.vit import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(CONFIG_PATH)
sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as wandb_records

# what a fresh copy of the repository leaves out at its top: the package is installed, tests
# are not a user's, the rest is output or caches
NOT_COPIED = frozenset({
    ".git", ".venv", "src", "tests", "logs", "data", "wandb", "outputs", "multirun",
    ".pytest_cache", ".ruff_cache", "exported",
})  # fmt: skip

# a ViT for 8x8 one-channel images (the digits): 2x2 patches, 16 tokens
TINY_VIT = dict(
    _target_="vitlab.models.vit.VisionTransformer",
    img_size=8,
    patch_size=2,
    in_chans=1,
    num_classes=10,
    embed_dim=32,
    depth=2,
    num_heads=4,
)
# a tiny MAE's arguments besides its encoder
TINY_DECODER = dict(
    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.75, norm_pix_loss=True
)
# what a task's config group gives besides its model and optimizer
TASK_PARTS = ("_target_", "model", "optimizer")


# --- models and tasks -------------------------------------------------------------------------


@pytest.fixture
def vit_config() -> Callable[..., dict[str, Any]]:
    """``vit_config(**changes)``: the config of a tiny digits ViT, as a task receives it."""
    return lambda **changes: TINY_VIT | changes


@pytest.fixture
def tiny_vit(vit_config) -> Callable[..., VisionTransformer]:
    """``tiny_vit(**changes)``: a tiny digits ViT."""

    def build(**changes: Any) -> VisionTransformer:
        config = vit_config(**changes)
        config.pop("_target_")
        return VisionTransformer(**config)

    return build


@pytest.fixture
def mae_config(vit_config) -> Callable[..., dict[str, Any]]:
    """``mae_config(**changes)``: a tiny MAE over the tiny ViT (``encoder=...`` to change it)."""

    def config(encoder: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
        return {
            "_target_": "vitlab.models.mae.MaskedAutoencoderViT",
            "encoder": encoder or vit_config(),
            **TINY_DECODER,
            **changes,
        }

    return config


@pytest.fixture
def tiny_mae(tiny_vit) -> Callable[..., MaskedAutoencoderViT]:
    """``tiny_mae(encoder=None, **changes)``: a tiny MAE (the tiny ViT as its encoder)."""

    def build(encoder: VisionTransformer | None = None, **changes: Any) -> MaskedAutoencoderViT:
        return MaskedAutoencoderViT(encoder or tiny_vit(), **(TINY_DECODER | changes))

    return build


@functools.cache
def task_group_arguments(option: str) -> dict[str, Any]:
    """The arguments ``conf/task/<option>.yaml`` gives its task besides model and optimizer,
    resolved against the default data; a value the group leaves to the user (``???``) left out."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=none", f"task={option}"])
    task = OmegaConf.to_container(cfg.task, resolve=True, throw_on_missing=False)
    return {key: value for key, value in task.items() if key not in TASK_PARTS and value != "???"}


@pytest.fixture
def task_recipe() -> Callable[..., dict[str, Any]]:
    """``task_recipe(option, **changes)``: the arguments (warmup, monitor, ...) that
    ``conf/task/<option>.yaml``, their one home, gives a task besides its model and optimizer,
    with ``changes``: ``ClassificationTask(model, optimizer, **task_recipe("classification"))``."""
    return lambda option, **changes: task_group_arguments(option) | changes


@pytest.fixture
def optimizer_config() -> Callable[..., dict[str, Any]]:
    """``optimizer_config(name="AdamW", **keywords)``: a partial torch optimizer's config."""
    return lambda name="AdamW", **keywords: {
        "_target_": f"torch.optim.{name}",
        "_partial_": True,
        "lr": 1e-3,
        **keywords,
    }


@pytest.fixture
def quiet_trainer() -> Callable[..., L.Trainer]:
    """``quiet_trainer(**kwargs)``: a CPU Trainer without logger, checkpoints, progress bar or
    model summary unless asked for."""
    quiet = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return lambda **kwargs: L.Trainer(**(quiet | kwargs))


# --- configs and data --------------------------------------------------------------------------


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_config(*overrides, config="train")``: the run config train.py would get,
    resolved, with its output directory in a temporary folder."""

    def composer(*overrides: str, config: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config, overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        OmegaConf.resolve(cfg)
        return cfg

    return composer


@pytest.fixture
def image_tree(tmp_path: Path) -> Callable[..., Path]:
    """``image_tree(name, splits={"train": 4, "val": 2})``: a tree of real JPEG and PNG files,
    ``<root>/<split>/class_<k>/<image>``, three classes, that many images per class."""

    def write(name: str = "images", splits: dict[str, int] | None = None) -> Path:
        root = tmp_path / name
        write_image_tree(root, splits or {"train": 4, "val": 2})
        return root

    return write


# --- the entry points, as a user runs them -----------------------------------------------------


class CLI:
    """Runs ``python <script> <overrides>`` in a fresh copy of the repository, the way a user
    does: the copy is the working directory (so logs and data go to its ``logs/`` and
    ``data/``), the logger is the configured one, and W&B finds no credentials (the home
    directory is the test's own), so it logs offline as it does for a new user."""

    def __init__(self, repo: Path, home: Path):
        self.repo, self.log_dir = repo, repo / "logs"
        home.mkdir(exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
        self.env = inherited | {"HOME": str(home)}

    def __call__(
        self, script: str, *arguments: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        command = [sys.executable, script, *arguments]
        result = subprocess.run(
            command, cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
            )
        return result

    def run_dirs(self, script: str = "train") -> list[Path]:
        """This copy's run directories of ``script``, oldest first."""
        folder = self.log_dir / script / "runs"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def sweep_dirs(self, script: str = "train") -> list[Path]:
        folder = self.log_dir / script / "multiruns"
        return sorted(folder.iterdir()) if folder.is_dir() else []


def fresh_copy(destination: Path) -> Path:
    """The repository's entry points, benchmarks and notebooks, without outputs (the configs
    come with the installed package)."""

    def left_out(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {n for n in names if (top and n in NOT_COPIED) or n == "__pycache__"}

    shutil.copytree(ROOT, destination, ignore=left_out)
    return destination


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """``cli("train.py", "debug=fdr")`` runs an entry point in a fresh copy of the repository."""
    return CLI(fresh_copy(tmp_path / "repo"), tmp_path / "home")


@pytest.fixture(scope="module")
def module_cli(tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """One fresh copy shared by a module's tests, for commands that build on each other."""
    folder = tmp_path_factory.mktemp("module")
    return CLI(fresh_copy(folder / "repo"), folder / "home")
