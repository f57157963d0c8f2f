"""predict's checks before any work: its inputs, counts and device; what each task's predictions
become (a writer per ``prediction``); and what it imports."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import vitlab.tasks
from vitlab.errors import UserError
from vitlab.predict import WRITERS, image_paths, predict, resolve_device
from vitlab.tasks.base import RecipeTask

ROOT = Path(__file__).resolve().parents[1]
# a few digit canvases (32x32 images, masks and boxes) trained on for two steps
CANVAS = ("data.split_sizes={train:8,val:4,test:4}", "data.batch_size=4")


def predict_config(ckpt_path: Path, inputs: Path, output: Path) -> DictConfig:
    """predict.py's config (conf/predict.yaml's defaults) for these files, on the CPU, every
    detection kept."""
    return OmegaConf.create({
        "ckpt_path": str(ckpt_path), "inputs": str(inputs), "output": str(output),
        "top_k": 5, "batch_size": 3, "device": "cpu", "score_thresh": 0.0,
    })  # fmt: skip


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


def all_subclasses(cls: type) -> set[type]:
    return {c for sub in cls.__subclasses__() for c in (sub, *all_subclasses(sub))}


def test_every_task_that_predicts_has_a_writer():
    for module in pkgutil.iter_modules(vitlab.tasks.__path__, f"{vitlab.tasks.__name__}."):
        importlib.import_module(module.name)
    predictions = {task.prediction for task in all_subclasses(RecipeTask)}
    assert predictions == {None, "classes", "masks", "boxes"}
    assert set(WRITERS) == predictions - {None}


def test_a_checkpoint_that_predicts_nothing_is_refused_naming_its_task(
    trained_checkpoint, tmp_path: Path
):
    ckpt_path = trained_checkpoint("experiment=digits_mae_pretrain")
    image = write_two_classes(tmp_path)
    with pytest.raises(UserError) as error:
        predict(predict_config(ckpt_path, image, tmp_path / "out" / "p.csv"))
    assert str(error.value) == (
        f"ckpt_path: {ckpt_path} is a checkpoint of vitlab.tasks.mae.MAEPretrainTask, which "
        "predicts nothing; give one of a classification, fine-tuning, linear-probe, segmentation "
        "or detection run"
    )
    assert not (tmp_path / "out").exists()


def test_a_segmenter_writes_a_mask_at_each_images_size_and_an_overlay(
    trained_checkpoint, tmp_path: Path
):
    data = tmp_path / "data"
    ckpt_path = trained_checkpoint(
        "experiment=digits_segmentation", *CANVAS, f"paths.data_dir={data}"
    )
    inputs = data / "digit_canvas" / "test" / "images"
    predict(predict_config(ckpt_path, inputs, tmp_path / "out" / "p.csv"))
    for image in sorted(inputs.iterdir()):
        with Image.open(tmp_path / "out" / "masks" / image.name) as mask:
            assert mask.mode == "L" and mask.size == (32, 32) and np.array(mask).max() <= 10
        with Image.open(tmp_path / "out" / "overlays" / image.name) as overlay:
            assert overlay.mode == "RGB" and overlay.size == (256, 256)
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 4


def test_a_detector_writes_every_images_boxes_and_an_overlay(trained_checkpoint, tmp_path: Path):
    data = tmp_path / "data"
    ckpt_path = trained_checkpoint(
        "experiment=digits_detection", *CANVAS, f"paths.data_dir={data}",
        # two steps leave every score near FCOS's prior (0.01): keep them all
        "task.model.score_thresh=0.0",
    )  # fmt: skip
    inputs = data / "digit_canvas" / "test" / "images"
    predict(predict_config(ckpt_path, inputs, tmp_path / "out" / "p.csv"))
    boxes = json.loads((tmp_path / "out" / "boxes.json").read_text())
    assert sorted(boxes) == sorted(str(path) for path in inputs.iterdir())
    detection = boxes[str(inputs / "00000.png")][0]
    assert set(detection) == {"box", "label", "name", "score"} and len(detection["box"]) == 4
    assert detection["name"] == str(detection["label"] - 1)  # label 1 is the digit 0
    with Image.open(tmp_path / "out" / "overlays" / "00000.png") as overlay:
        assert overlay.mode == "RGB" and overlay.size == (256, 256)
