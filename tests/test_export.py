"""Export of a train.py-style checkpoint: safetensors + config JSON, and ONNX checked numerically."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import onnxruntime
import pytest
import torch
from quiet_trainer import quiet_trainer
from safetensors.torch import load_file

from vitlab.data.digits import DigitsDataModule
from vitlab.export import (
    CONFIG_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    export,
    load_exported,
    main,
    trained_vit,
)
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.classification import ClassificationTask
from vitlab.tasks.linear_probe import LinearProbeTask

ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFIG = {
    "_target_": "vitlab.models.vit.VisionTransformer",
    "img_size": 8,
    "patch_size": 2,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "global_pool": "token",
}


def trained_checkpoint(task: L.LightningModule, path: Path) -> Path:
    """A few steps of training, saved with the run config in the hyperparameters (as train.py)."""
    task_class = type(task)
    task_config = {"_target_": f"{task_class.__module__}.{task_class.__name__}"}
    task.save_hyperparameters({"model": MODEL_CONFIG, "task": task_config})
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    trainer.save_checkpoint(path)
    return path


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(**{k: v for k, v in MODEL_CONFIG.items() if k != "_target_"})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-3)
    task = ClassificationTask(tiny_vit(), optimizer, warmup_epochs=0)
    return trained_checkpoint(task, tmp_path_factory.mktemp("ckpt") / "last.ckpt")


def test_a_linear_probe_exports_as_a_plain_vit_with_its_batchnorm_folded(tmp_path: Path):
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    probe = LinearProbeTask(tiny_vit(), optimizer, warmup_epochs=0)
    path = trained_checkpoint(probe, tmp_path / "probe.ckpt")
    assert probe.model.head[0].num_batches_tracked == 3
    export(path, tmp_path / "export")
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(tmp_path / "export")(images), probe.eval()(images))


def test_safetensors_hold_exactly_the_vit_weights_and_load_from_the_json_config(
    checkpoint: Path, tmp_path: Path
):
    export(checkpoint, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config == {k: v for k, v in MODEL_CONFIG.items() if k != "_target_"}
    weights = load_file(tmp_path / WEIGHTS_FILE)
    assert weights.keys() == VisionTransformer(**config).state_dict().keys()
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, tensor in weights.items():
        assert torch.equal(tensor, trained[f"model.{name}"]), name
    images = torch.randn(4, 1, 8, 8)
    model, _ = trained_vit(checkpoint)
    with torch.no_grad():
        assert torch.equal(load_exported(tmp_path)(images), model(images))


def test_onnx_export_matches_pytorch_for_another_batch_size(checkpoint: Path, tmp_path: Path):
    export(checkpoint, tmp_path, onnx=True)
    model = load_exported(tmp_path)
    images = torch.randn(5, 1, 8, 8)
    session = onnxruntime.InferenceSession(
        str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images).numpy()
    assert logits.shape == (5, 10)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitlab.export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_command_line_writes_the_weights_and_config(checkpoint: Path, tmp_path: Path):
    result = run_module(str(checkpoint), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert f"weights: {tmp_path / 'out' / WEIGHTS_FILE}" in result.stdout


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.ckpt"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: ckpt_path: no such file: {tmp_path / 'nope.ckpt'}"
    )


def test_a_checkpoint_of_another_task_is_refused_with_a_preview_of_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    segmenter = {f"model.backbone.blocks.{i}.attn.qkv.weight": torch.zeros(1) for i in range(8)}
    task = {"_target_": "vitlab.tasks.segmentation.SegmentationTask"}
    checkpoint = tmp_path / "segmenter.ckpt"
    torch.save(
        {"state_dict": segmenter, "hyper_parameters": {"model": MODEL_CONFIG, "task": task}},
        checkpoint,
    )
    with pytest.raises(SystemExit) as exit_info:
        main([str(checkpoint), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"error: ckpt_path: {checkpoint} is not a VisionTransformer classifier of task "
        "vitlab.tasks.segmentation.SegmentationTask: missing "
    )
    assert "unexpected 8 keys (backbone.blocks.0.attn.qkv.weight, " in error
    assert error.endswith(", ... 3 more)")
    assert "\n" not in error


def test_exporting_onto_a_file_is_a_one_line_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([str(checkpoint), str(tmp_path / "taken")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: out_dir: {tmp_path / 'taken'} is a file; give a folder to write into"
    )
