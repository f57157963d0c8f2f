"""predict's preprocessing for RGB data: the run's eval transform and the tree's class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from vitlab.data.transforms import Normalize, build_eval_transform
from vitlab.predict import eval_preprocessing, image_paths, predict, resolve_device
from vitlab.run import UserError


def image_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / "train" / name).mkdir(parents=True)
        pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train" / name / "0.png")
    return root / "train" / "dog" / "0.png"


def test_rgb_runs_get_their_eval_transform(tmp_path: Path):
    image = image_tree(tmp_path)
    data_cfg = OmegaConf.create(
        {
            "_target_": "vitlab.data.imagefolder.ImageFolderDataModule",
            "root": str(tmp_path),
            "img_size": 16,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "eval_crop_pct": 1.0,
        }
    )
    preprocess = eval_preprocessing(data_cfg, 16)
    resized = build_eval_transform(16, crop_pct=1.0)(Image.open(image).convert("RGB"))
    expected = Normalize((0.5,) * 3, (0.25,) * 3)(resized)
    assert preprocess(image).shape == (3, 16, 16)
    torch.testing.assert_close(preprocess(image), expected)


def test_inputs_are_a_file_or_the_sorted_images_below_a_folder(tmp_path: Path):
    image = image_tree(tmp_path)
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
