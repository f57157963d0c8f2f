"""Shared fixtures: tiny models and task configs, composed run configs, real image trees, and
the entry points run as a user runs them (from a fresh copy of the repository, default paths,
default logger, no W&B credentials).

Nothing here changes how vitlab behaves: no environment variable or config value is set for
the whole suite. A test that needs a setting passes it where it can be read.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import vitlab.config  # noqa: F401  (the resolvers the config groups use)
from tests.helpers.budget import DIGITS_RUN
from tests.helpers.cli import CLI, fresh_copy
from vitlab.cli import CONFIG_PATH
from vitlab.data.synthetic import write_image_tree
from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.base import build_task

CONF = Path(CONFIG_PATH)

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
def trained_checkpoint(compose_config, quiet_trainer, tmp_path: Path) -> Callable[..., Path]:
    """``trained_checkpoint(*overrides)``: the checkpoint of the run train.py composes from
    ``overrides`` after two training steps, with the run config in it as train.py stores it
    (each call a run of its own: ``<tmp>/run_<n>/checkpoints/last.ckpt``)."""
    runs = itertools.count()

    def train(*overrides: str) -> Path:
        cfg = compose_config(*overrides)
        task = build_task(cfg.task)
        task.run_config = OmegaConf.to_container(cfg, resolve=True)
        trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
        trainer.fit(task, datamodule=instantiate(cfg.data))
        path = tmp_path / f"run_{next(runs)}" / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(path)
        return path

    return train


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


@pytest.fixture
def cli(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> CLI:
    """``cli("train.py", "debug=fdr")`` runs an entry point in a fresh copy of the repository."""
    return CLI(fresh_copy(tmp_path / "repo"), tmp_path / "home", capfd)


@pytest.fixture(scope="module")
def module_copy(tmp_path_factory: pytest.TempPathFactory) -> CLI:
    """One fresh copy shared by a module's tests (see ``module_cli``)."""
    folder = tmp_path_factory.mktemp("module")
    return CLI(fresh_copy(folder / "repo"), folder / "home")


@pytest.fixture
def ibot_recipe() -> dict[str, Any]:
    """conf/task/ibot.yaml's arguments as the task receives them (``model`` still ``${model}``)."""
    recipe = OmegaConf.to_container(OmegaConf.load(CONF / "task" / "ibot.yaml"))
    recipe.pop("_target_")
    return recipe


@pytest.fixture
def module_cli(module_copy: CLI, capfd: pytest.CaptureFixture[str]) -> CLI:
    """The module's one fresh copy, for commands that build on each other."""
    return CLI(module_copy.repo, module_copy.home, capfd)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The run directory of one short digits run of train.py (``DIGITS_RUN``), shared by the
    tests that need a trained classifier; trained by the first test that asks for it, once
    for all pytest-xdist workers. Tests read it and write nothing into it."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the folder all workers' temporary folders sit in
    folder, trained = shared / "digits_run", "repo/logs/train/runs/*/checkpoints/last.ckpt"
    with FileLock(shared / "digits_run.lock"):
        if not list(folder.glob(trained)):
            CLI(fresh_copy(folder / "repo"), folder / "home")(*DIGITS_RUN)
    (checkpoint,) = folder.glob(trained)
    return checkpoint.parents[1]


@pytest.fixture
def digits_checkpoint(digits_run: Path) -> Path:
    """The last checkpoint of the shared digits run (``digits_run``)."""
    return digits_run / "checkpoints" / "last.ckpt"
