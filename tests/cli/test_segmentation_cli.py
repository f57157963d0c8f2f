"""The digits segmentation experiment through train.py, on canvases it generates itself."""

from __future__ import annotations

import json


def test_segmentation_experiment_trains_and_tests_end_to_end(cli, tmp_path):
    root = tmp_path / "digit_canvas"
    cli(
        "train.py",
        "experiment=digits_segmentation",
        "debug=limit",
        f"data.root={root}",
        "data.split_sizes={train:64,val:16,test:16}",
        "logger=none",
    )
    assert len(list((root / "train" / "masks").glob("*.png"))) == 64
    (run_dir,) = (cli.log_dir / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/miou", "test/pixel_acc", "test/loss", "val/miou"} <= metrics.keys()
    assert 0.0 <= metrics["test/miou"] <= 1.0
    assert len(list((run_dir / "checkpoints").glob("epoch_*.ckpt"))) == 1
