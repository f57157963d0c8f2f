"""For the CLI tests of predict.py and the export (``pytest_plugins = ["digits_run"]``): one
short digits run of train.py that they share, and digits written as image files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vitlab.data.digits import DigitsDataModule

TRAIN_ARGS = (
    "train.py",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=csv",
)


@pytest.fixture(scope="session")
def trained_runs() -> dict[str, Path]:
    return {}


@pytest.fixture
def digits_checkpoint(cli, trained_runs: dict[str, Path]) -> Path:
    """The last checkpoint of a short digits run, trained by the first test that asks for it,
    in that test's copy of the repository (which outlives the test)."""
    if "digits" not in trained_runs:
        cli(*TRAIN_ARGS)
        trained_runs["digits"] = cli.run_dirs()[-1] / "checkpoints" / "last.ckpt"
    return trained_runs["digits"]


def held_out_digits(count: int) -> torch.Tensor:
    """The first ``count`` digits of the test split, (count, 1, 8, 8) in [0, 1]."""
    digits = DigitsDataModule()
    digits.setup()
    return digits.splits["test"].images[:count]


def write_digit(image: torch.Tensor, path: Path, size: int = 8, mode: str = "L") -> Path:
    """A digit in [0, 1] as an 8-bit PNG, upscaled to ``size`` by nearest neighbours, in
    ``mode``."""
    pixels = (image[0] * 255).round().to(torch.uint8).numpy()
    gray = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    gray.convert(mode).save(path)
    return path
