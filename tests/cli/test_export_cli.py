"""``python -m vitlab.export`` end to end: a checkpoint from train.py exported, its ONNX one
file, and a consumer of config.json + model.safetensors that gets predict.py's answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.digit_images import held_out_digits, write_digit
from tests.helpers.export_consumer import probabilities
from tests.helpers.predictions import read_predictions


def test_help_describes_the_command_and_the_files_it_writes(cli):
    help_text = cli("-m", "vitlab.export", "--help").stdout
    assert help_text.startswith("usage: python -m vitlab.export [-h] [--onnx] ckpt_path out_dir")
    for described in ("model.safetensors", "config.json", "model.onnx", '"preprocessing"'):
        assert described in help_text, described
    for op in ("convert", "resize", "center_crop", "to_tensor", "scale", "normalize"):
        assert f'{{"op": "{op}"' in help_text, op


def consumer_matches_predict_py(cli, ckpt_path: Path, export_dir: Path, paths: list[Path]):
    """predict.py on ``paths`` and a consumer of the export agree on every probability."""
    output = export_dir.parent / "predictions.csv"
    inputs = paths[0].parent
    cli("predict.py", f"ckpt_path={ckpt_path}", f"inputs={inputs}", "top_k=10", f"output={output}")
    predicted = read_predictions(output)
    for path, probs in zip(paths, probabilities(export_dir, paths), strict=True):
        by_class = predicted[str(path)]
        assert next(iter(by_class)) == probs.argmax().item(), path.name
        for digit, prob in by_class.items():
            assert prob == pytest.approx(probs[digit].item(), abs=1e-5), path.name


@pytest.mark.slow
def test_export_writes_one_onnx_file_and_a_config_that_reproduces_predict_py(
    cli, digits_checkpoint: Path, tmp_path: Path
):
    result = cli("-m", "vitlab.export", str(digits_checkpoint), str(tmp_path / "export"), "--onnx")
    assert "ONNX matches PyTorch" in result.stdout
    # the ONNX weights are inside model.onnx: no model.onnx.data to forget when copying it
    written = sorted(path.name for path in (tmp_path / "export").iterdir())
    assert written == ["config.json", "model.onnx", "model.safetensors"]
    paths = [
        write_digit(image, tmp_path / "images" / f"{index}.png")
        for index, image in enumerate(held_out_digits(8))
    ]
    consumer_matches_predict_py(cli, digits_checkpoint, tmp_path / "export", paths)


@pytest.mark.slow
def test_a_consumer_reproduces_predict_py_on_digits_of_other_sizes_and_modes(
    cli, digits_checkpoint: Path, tmp_path: Path
):
    cli("-m", "vitlab.export", str(digits_checkpoint), str(tmp_path / "export"))
    paths = [
        write_digit(image, tmp_path / "images" / f"{index}_{size}_{mode}.png", size, mode)
        for index, image in enumerate(held_out_digits(4))
        for size, mode in [(64, "L"), (32, "RGB"), (20, "L")]
    ]
    consumer_matches_predict_py(cli, digits_checkpoint, tmp_path / "export", paths)
