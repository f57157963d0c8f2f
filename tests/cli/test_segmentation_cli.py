"""The digits segmentation experiment through train.py, on canvases it generates itself; eval.py
and predict.py on its checkpoint."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image


def test_segmentation_experiment_trains_and_tests_end_to_end(cli, tmp_path):
    root = tmp_path / "digit_canvas"
    cli(
        "train.py",
        "experiment=digits_segmentation",
        "task/decoder=pup",
        "task.model.decoder.channels=16",
        "debug=limit",
        "trainer.limit_test_batches=1.0",
        f"data.root={root}",
        "data.split_sizes={train:64,val:16,test:16}",
    )
    assert len(list((root / "train" / "masks").glob("*.png"))) == 64
    (run_dir,) = cli.run_dirs()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/miou", "test/pixel_acc", "test/loss", "val/miou"} <= metrics.keys()
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    # eval.py rebuilds task and data from the checkpoint alone: the same mIoU, to the last digit
    cli("eval.py", f"ckpt_path={best}", f"data.root={root}")
    (eval_dir,) = cli.run_dirs("eval")
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert {k: evaluated[k] for k in ("test/miou", "test/pixel_acc")} == {
        k: metrics[k] for k in ("test/miou", "test/pixel_acc")
    }
    # predict.py: a class mask at each image's own size and an overlay, per image
    inputs = root / "test" / "images"
    cli("predict.py", f"ckpt_path={best}", f"inputs={inputs}", f"output={tmp_path}/out/p.csv")
    for name in ("00000.png", "00001.png"):
        with Image.open(tmp_path / "out" / "masks" / name) as mask:
            assert mask.mode == "L" and mask.size == (32, 32) and np.array(mask).max() <= 10
        with Image.open(tmp_path / "out" / "overlays" / name) as overlay:
            assert overlay.mode == "RGB" and overlay.size == (256, 256)
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 16
