"""predict's checks before any work: its inputs, counts and device; and what it imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vitlab.errors import UserError
from vitlab.predict import image_paths, predict, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def write_two_classes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / "train" / name).mkdir(parents=True)
        pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train" / name / "0.png")
    return root / "train" / "dog" / "0.png"


def test_inputs_are_a_file_or_the_sorted_images_below_a_folder(tmp_path: Path):
    image = write_two_classes(tmp_path)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    assert image_paths(image) == [image]
    assert [p.parent.name for p in image_paths(tmp_path)] == ["cat", "dog"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no image files"):
        image_paths(empty)


@pytest.mark.parametrize(
    ("key", "value"), [("top_k", "abc"), ("top_k", 0), ("batch_size", 0), ("batch_size", 2.5)]
)
def test_counts_must_be_whole_and_positive(key: str, value: object):
    cfg = OmegaConf.create({"ckpt_path": "x.ckpt", "inputs": "x", "top_k": 5, "batch_size": 4})
    cfg[key] = value
    with pytest.raises(UserError, match=rf"^{key} must be a whole number of at least 1"):
        predict(cfg)


def test_devices_are_checked_against_this_machine():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(UserError, match="expected auto, cpu, cuda or cuda:N, got 'bogus'"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="this machine has no CUDA device"):
            resolve_device("cuda:0")


def test_predict_py_and_the_export_do_not_import_the_training_jobs():
    """``vitlab.run`` (training and evaluation jobs) is no part of deploying a model."""
    code = (
        "import runpy, sys; runpy.run_path('predict.py'); import vitlab.export; "
        "print('vitlab.run' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
