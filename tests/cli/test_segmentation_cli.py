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
    )
    assert len(list((root / "train" / "masks").glob("*.png"))) == 64
    (run_dir,) = cli.run_dirs()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/miou", "test/pixel_acc", "test/loss", "val/miou"} <= metrics.keys()
    assert 0.0 <= metrics["test/miou"] <= 1.0
    assert len(list((run_dir / "checkpoints").glob("epoch_*.ckpt"))) == 1


def test_segmentation_on_the_canvases_as_typed(cli):
    """task=segmentation data=digit_canvas: the task's own metric picks the best checkpoint."""
    cli(
        "train.py",
        "task=segmentation",
        "data=digit_canvas",
        "debug=fdr",
        "data.split_sizes={train:64,val:16,test:16}",
    )
    (run_dir,) = cli.run_dirs()
    assert "val/miou_best" in json.loads((run_dir / "metrics.json").read_text())
