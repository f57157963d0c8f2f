"""Every task fits a step and validates under the default callbacks and the default logger, on
every data option it supports; the optional callbacks and the other loggers on top of that.

Data sit where the configs look for them (``data/imagefolder`` in the copy), so the commands
are the ones a user types, one batch of each split (``CAP``) being the only addition.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.budget import CAP
from vitlab.data.synthetic import write_image_tree

# the runs share one copy, in which the MAE encoders are pretrained once (``pretrained_encoder``)
pytestmark = pytest.mark.xdist_group("task_matrix")

# 3 classes of JPEG and PNG files: 132 training images, one batch of the RGB default (128)
IMAGE_TREE = {"train": 44, "val": 4}
# the metrics each task is judged by after validation (its monitor among them)
VALIDATED = {
    "classification": {"val/acc1", "val/acc1_best", "test/acc1"},
    "mae_pretrain": {"val/loss", "val/loss_best", "val/probe_acc1", "test/loss"},
    "mae_finetune": {"val/acc1", "val/acc1_best", "test/acc1"},
    "linear_probe": {"val/acc1", "val/acc1_best", "test/acc1"},
    "segmentation": {"val/miou", "val/miou_best", "test/miou"},
}
SUPPORTED = [
    ("classification", "digits"),
    ("classification", "imagefolder"),
    ("mae_pretrain", "digits"),
    ("mae_pretrain", "imagefolder"),
    ("mae_finetune", "digits"),
    ("mae_finetune", "imagefolder"),
    ("linear_probe", "digits"),
    ("linear_probe", "imagefolder"),
    ("segmentation", "digit_canvas"),
]


@pytest.fixture(scope="module")
def image_folder(module_copy) -> None:
    """An image tree at the imagefolder config's default root in the module's copy."""
    write_image_tree(module_copy.repo / "data" / "imagefolder", IMAGE_TREE)


@pytest.fixture
def repo(module_cli, image_folder):
    """The shared copy, with an image tree at the imagefolder config's default root."""
    return module_cli


def recipe(task: str, data: str) -> list[str]:
    """The overrides that run ``task`` on ``data``: on the digits, the recipe written for the
    pair (``train.py`` picks it); on an image folder, which no recipe is written for, the
    groups' own defaults."""
    chosen = [f"task={task}", f"data={data}"]
    return ["experiment=none", *chosen] if data == "imagefolder" else chosen


def newest_metrics(cli) -> dict[str, float]:
    return json.loads((cli.run_dirs()[-1] / "metrics.json").read_text())


def pretrained_encoder(cli, data: str) -> Path:
    """The last checkpoint of an MAE pretraining step on ``data`` (made once per data option)."""
    marker = cli.repo / f"pretrained_{data}.ckpt"
    if not marker.exists():
        cli("train.py", *recipe("mae_pretrain", data), *CAP)
        (cli.run_dirs()[-1] / "checkpoints" / "last.ckpt").rename(marker)
    return marker


@pytest.mark.slow
@pytest.mark.parametrize(("task", "data"), SUPPORTED, ids=[f"{t}-{d}" for t, d in SUPPORTED])
def test_every_task_trains_validates_and_tests_on_the_data_it_supports(repo, task, data):
    pretrained = ()
    if task in ("mae_finetune", "linear_probe"):
        pretrained = (f"task.pretrained={pretrained_encoder(repo, data)}",)
    repo("train.py", *recipe(task, data), *pretrained, *CAP)
    run_dir = repo.run_dirs()[-1]
    assert VALIDATED[task] <= newest_metrics(repo).keys()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("epoch_*.ckpt"))) == 1
    assert len(list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "writes"),
    [
        ("logger=many", "csv/metrics.csv"),
        ("logger=csv", "csv/metrics.csv"),
        ("logger=none", "checkpoints/last.ckpt"),
    ],
)
def test_optional_callbacks_and_loggers_run_on_the_default_run(repo, option, writes):
    repo("train.py", option, *CAP)
    run_dir = repo.run_dirs()[-1]
    assert "test/acc1" in newest_metrics(repo)
    assert (run_dir / writes).exists()


@pytest.mark.slow
def test_reconstruction_grids_run_with_mae_pretraining(repo):
    repo(
        "train.py",
        "experiment=digits_mae_pretrain",
        "callbacks=[default,reconstruction]",
        *CAP,
    )
    assert "val/loss" in newest_metrics(repo)
    assert list(
        repo.run_dirs()[-1].glob("wandb/offline-run-*/files/media/images/val/reconstruction_*.png")
    )
