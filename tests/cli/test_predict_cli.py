"""predict.py end to end: a checkpoint from train.py, digits written as PNG files, a CSV out; and
what predict.py and eval.py list for --help."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers.digit_images import held_out_digits, write_digit
from tests.helpers.predictions import read_predictions
from vitlab.cli import CONFIG_PATH
from vitlab.data.digits import DigitsDataModule
from vitlab.models.vit import VisionTransformer

NUM_IMAGES, TOP_K = 20, 3


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


@pytest.mark.slow
def test_predictions_match_the_model_applied_to_the_preprocessed_images(
    cli, digits_checkpoint: Path, tmp_path: Path
):
    images = held_out_digits(NUM_IMAGES)
    # in nested folders, to exercise the search
    paths = [
        write_digit(image, tmp_path / "images" / f"batch_{i // 10}" / f"digit_{i:03d}.png")
        for i, image in enumerate(images)
    ]
    output = tmp_path / "predictions.csv"
    result = cli(
        "predict.py",
        f"ckpt_path={digits_checkpoint}",
        f"inputs={tmp_path / 'images'}",
        f"top_k={TOP_K}",
        "batch_size=7",
        f"output={output}",
    )
    assert f"{NUM_IMAGES} predictions written" in result.stdout
    with output.open() as file:
        rows = list(csv.DictReader(file))
    ranks = range(1, TOP_K + 1)
    assert list(rows[0]) == ["path"] + [
        f"{c}_{r}" for r in ranks for c in ("class", "name", "prob")
    ]
    assert [row["path"] for row in rows] == [str(path) for path in paths]

    model = checkpoint_model(digits_checkpoint)
    normalize = DigitsDataModule().image.normalize()
    from_files = (images * 255).round() / 255  # what 8-bit files hold
    with torch.no_grad():
        expected = model(normalize(from_files)).softmax(dim=-1).topk(TOP_K)
        unnormalized = model(from_files).softmax(dim=-1).topk(TOP_K)
    predicted = torch.tensor([[int(row[f"class_{r}"]) for r in ranks] for row in rows])
    probs = torch.tensor([[float(row[f"prob_{r}"]) for r in ranks] for row in rows])
    assert torch.equal(predicted, expected.indices)
    torch.testing.assert_close(probs, expected.values, atol=2e-6, rtol=0)
    assert (probs - unnormalized.values).abs().max() > 1e-4  # the normalisation is visible
    assert all(row["name_1"] == DigitsDataModule.class_names[int(row["class_1"])] for row in rows)


@pytest.mark.slow
def test_a_digit_at_any_size_and_mode_gets_the_same_prediction(
    cli, digits_checkpoint: Path, tmp_path: Path
):
    """The issue: one digit as an 8x8 gray PNG, a 64x64 one (nearest-upsampled) and a 32x32 RGB
    one gave three different answers."""
    versions = {"8x8": (8, "L"), "64x64": (64, "L"), "32x32_rgb": (32, "RGB")}
    images = held_out_digits(5)
    paths = {
        (index, name): write_digit(image, tmp_path / "images" / f"{index}_{name}.png", *form)
        for index, image in enumerate(images)
        for name, form in versions.items()
    }
    output = tmp_path / "predictions.csv"
    cli("predict.py", f"ckpt_path={digits_checkpoint}", f"inputs={tmp_path / 'images'}",
        "top_k=10", f"output={output}")  # fmt: skip
    predicted = read_predictions(output)
    for index in range(len(images)):
        native = predicted[str(paths[index, "8x8"])]
        for name in versions:
            probs = predicted[str(paths[index, name])]
            assert next(iter(probs)) == next(iter(native)), name
            for digit, prob in probs.items():
                assert prob == pytest.approx(native[digit], abs=1e-5), name


def test_predict_without_inputs_says_how_to_call_it(cli):
    result = cli("predict.py", check=False)
    assert result.returncode == 2
    assert "predict.py needs a checkpoint and images" in result.stderr.strip().splitlines()[-1]


def group_options(help_text: str, group: str) -> list[str]:
    """The options a help text lists on its ``<group>: a, b, c   (remarks)`` line."""
    line = next(line for line in help_text.splitlines() if line.startswith(f"{group}: "))
    listed = line.removeprefix(f"{group}: ").split("(")[0]
    return [option.strip() for option in listed.split(",")]


@pytest.mark.parametrize(
    ("script", "header", "options"),
    [
        (
            "predict.py",
            "python predict.py: top-k classes of image files",
            ["ckpt_path=", "inputs=", "top_k=5", "batch_size=64", "device=auto", "output="],
        ),
        (
            "eval.py",
            "python eval.py: test (or validate) a checkpoint",
            ["ckpt_path=", "split=test", "data.root=", "data.batch_size=", "data.num_workers="],
        ),
    ],
)
def test_help_lists_the_entry_points_own_options(cli, script: str, header: str, options: list[str]):
    help_text = cli(script, "--help").stdout
    assert help_text.startswith(header)
    assert all(f"\n{option}" in help_text for option in options)
    assert f"Examples:\n  python {script} ckpt_path=" in help_text
    for group in ("model", "task", "data", "callbacks", "experiment"):
        assert f"\n{group}: " not in help_text, group
    if script == "eval.py":
        for group in ("trainer", "logger"):
            offered = sorted(path.stem for path in (Path(CONFIG_PATH) / group).glob("*.yaml"))
            assert group_options(help_text, group) == offered


def test_train_help_still_lists_every_config_group(cli):
    help_text = cli("train.py", "--help").stdout
    assert help_text.startswith("vitlab: train Vision Transformers")
    for group in ("model", "task", "data", "trainer", "logger", "experiment"):
        assert f"\n{group}: " in help_text, group
