"""The digits detection experiment through train.py, on canvases it generates itself; predict.py
draws its boxes and writes them as JSON."""

from __future__ import annotations

import json

import pytest
from PIL import Image


@pytest.mark.slow
def test_detection_experiment_trains_tests_and_predicts(cli, tmp_path):
    root = tmp_path / "digit_canvas"
    cli(
        "train.py",
        "experiment=digits_detection",
        "debug=limit",
        "trainer.limit_test_batches=1.0",
        f"data.root={root}",
        "data.split_sizes={train:32,val:8,test:8}",
        # one step leaves every score near FCOS's prior (0.01): keep them all
        "task.model.score_thresh=0.0",
    )
    assert (
        len(json.loads((root / "annotations" / "instances_train.json").read_text())["images"]) == 32
    )
    (run_dir,) = cli.run_dirs()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/map", "test/map_50", "test/map_75", "val/map"} <= metrics.keys()
    inputs = root / "test" / "images"
    out = tmp_path / "out"
    cli(
        "predict.py",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        f"inputs={inputs}",
        f"output={out}/p.csv",
        "score_thresh=0.0",
    )
    boxes = json.loads((out / "boxes.json").read_text())
    assert sorted(boxes) == sorted(str(path) for path in inputs.iterdir())
    detection = boxes[str(inputs / "00000.png")][0]
    assert set(detection) == {"box", "label", "name", "score"} and len(detection["box"]) == 4
    assert detection["name"] == str(detection["label"] - 1)  # label 1 is the digit 0
    with Image.open(out / "overlays" / "00000.png") as overlay:
        assert overlay.mode == "RGB" and overlay.size == (256, 256)
