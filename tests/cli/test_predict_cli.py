"""predict.py end to end: a checkpoint from train.py, digits written as PNG files, a CSV out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data.digits import DigitsDataModule
from vitlab.models.vit import VisionTransformer

NUM_IMAGES, TOP_K = 20, 3


def trained_checkpoint(cli) -> Path:
    cli("train.py", "debug=limit", "logger=none", "test=false")
    (run_dir,) = (cli.log_dir / "train" / "runs").iterdir()
    return run_dir / "checkpoints" / "last.ckpt"


def checkpoint_model(ckpt_path: Path) -> VisionTransformer:
    """The model straight from the checkpoint, without any vitlab loading code."""
    checkpoint = torch.load(ckpt_path, weights_only=True)
    config = dict(checkpoint["hyper_parameters"]["model"])
    config.pop("_target_")
    model = VisionTransformer(**config)
    prefix = "model."
    model.load_state_dict(
        {
            k.removeprefix(prefix): v
            for k, v in checkpoint["state_dict"].items()
            if k.startswith(prefix)
        }
    )
    return model.eval()


def write_pngs(images: torch.Tensor, folder: Path) -> list[Path]:
    """Digits in [0, 1] as 8-bit grayscale PNGs, in a nested folder to exercise the search."""
    paths = []
    for index, image in enumerate(images):
        path = folder / f"batch_{index // 10}" / f"digit_{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (image[0] * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def read_pngs(paths: list[Path]) -> torch.Tensor:
    pixels = [np.asarray(Image.open(path), dtype=np.float32) / 255 for path in paths]
    return torch.from_numpy(np.stack(pixels))[:, None]


@pytest.mark.slow
def test_predictions_match_the_model_applied_to_the_preprocessed_images(cli, tmp_path: Path):
    ckpt_path = trained_checkpoint(cli)
    digits = DigitsDataModule()
    digits.setup()
    test_split = digits.splits["test"]
    paths = write_pngs(test_split.images[:NUM_IMAGES], tmp_path / "images")
    output = tmp_path / "predictions.csv"

    result = cli(
        "predict.py",
        f"ckpt_path={ckpt_path}",
        f"inputs={tmp_path / 'images'}",
        f"top_k={TOP_K}",
        "batch_size=7",
        f"output={output}",
    )
    assert "predictions" in result.stdout and f"{NUM_IMAGES} predictions written" in result.stdout
    with output.open() as file:
        rows = list(csv.DictReader(file))
    ranks = range(1, TOP_K + 1)
    assert list(rows[0]) == ["path"] + [
        f"{c}_{r}" for r in ranks for c in ("class", "name", "prob")
    ]
    assert [row["path"] for row in rows] == [str(path) for path in paths]

    model = checkpoint_model(ckpt_path)
    normalize = test_split.transform  # standardised with the training split's statistics
    with torch.no_grad():
        from_files = model(normalize(read_pngs(paths))).softmax(dim=-1).topk(TOP_K)
        from_dataset = model(normalize(test_split.images[:NUM_IMAGES])).softmax(dim=-1)
        unnormalized = model(read_pngs(paths)).softmax(dim=-1).topk(TOP_K)
    predicted = torch.tensor([[int(row[f"class_{r}"]) for r in ranks] for row in rows])
    probs = torch.tensor([[float(row[f"prob_{r}"]) for r in ranks] for row in rows])
    assert torch.equal(predicted, from_files.indices)
    torch.testing.assert_close(probs, from_files.values, atol=1e-6, rtol=0)
    assert (probs - unnormalized.values).abs().max() > 1e-4  # the normalisation is visible
    assert all(row["name_1"] == DigitsDataModule.class_names[int(row["class_1"])] for row in rows)
    # 8-bit files only round the pixels: close to the dataset's own tensors
    torch.testing.assert_close(probs[:, 0], from_dataset.max(dim=-1).values, atol=1e-3, rtol=0)


def test_predict_without_inputs_says_how_to_call_it(cli):
    result = cli("predict.py", check=False)
    assert result.returncode == 2
    assert "predict.py needs a checkpoint and images" in result.stderr.strip().splitlines()[-1]
