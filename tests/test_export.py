"""Export of train.py checkpoints: the task's classifier as a plain ViT, one-file ONNX, and a
config.json from which a consumer without vitlab's data code computes what predict.py does."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from tests.helpers.export_consumer import load_export, probabilities
from tests.helpers.predictions import read_predictions
from vitlab.export import (
    CONFIG_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    export,
    main,
    needs_external_data,
)
from vitlab.models.vit import VisionTransformer
from vitlab.predict import predict
from vitlab.tasks.linear_probe import LinearProbeTask

DIGITS_PREPROCESSING = [
    {"op": "convert", "mode": "L"},
    {"op": "resize", "size": [8, 8], "interpolation": "box"},
    {"op": "to_tensor"},
    {"op": "scale"},
    {"op": "resize", "size": [8, 8], "interpolation": "bilinear"},
    {"op": "normalize", "mean": [0.3049], "std": [0.3758]},
]


def test_a_linear_probe_exports_as_a_plain_vit_computing_the_probes_logits(
    trained_checkpoint, tmp_path: Path
):
    ckpt_path = trained_checkpoint("experiment=digits_linear_probe", "task.pretrained=null")
    export(ckpt_path, tmp_path / "export")
    model, _ = load_export(tmp_path / "export")
    assert type(model.head) is nn.Linear
    probe = LinearProbeTask.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    # the BatchNorm learned statistics: folding them is not the identity
    assert probe.model.head[0].num_batches_tracked == 2
    assert probe.model.head[0].running_var.sub(1).abs().max() > 1e-3
    images = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(images), probe(images), atol=1e-5, rtol=0)


def test_the_files_hold_the_classifier_its_class_names_and_preprocessing(
    trained_checkpoint, tmp_path: Path
):
    ckpt_path = trained_checkpoint()
    export(ckpt_path, tmp_path / "export")
    model, config = load_export(tmp_path / "export")
    assert config["class_names"] == [str(digit) for digit in range(10)]
    assert config["preprocessing"] == DIGITS_PREPROCESSING
    weights = load_file(tmp_path / "export" / WEIGHTS_FILE)
    trained = torch.load(ckpt_path, weights_only=True)["state_dict"]
    assert weights.keys() == model.state_dict().keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, trained[f"model.{name}"]), name


def rgb_inputs(tree: Path, folder: Path) -> list[Path]:
    """Copies of the tree's JPEG and PNG files, and one of them as grayscale and as a taller
    RGBA image, in ``folder``."""
    folder.mkdir()
    photos = sorted((tree / "val").rglob("*.JPEG"))[:2] + sorted((tree / "train").rglob("*.png"))
    copies = [
        Path(shutil.copy(photo, folder / f"{i}{photo.suffix}")) for i, photo in enumerate(photos)
    ]
    with Image.open(photos[0]) as image:
        image.convert("L").save(folder / "gray.png")
        image.convert("RGBA").resize((50, 70)).save(folder / "tall_rgba.png")
    return copies + [folder / "gray.png", folder / "tall_rgba.png"]


@pytest.mark.parametrize("fast_path", [True, False], ids=["tensor", "pil"])
def test_a_consumer_of_config_json_gets_predict_pys_probabilities_for_rgb_data(
    trained_checkpoint, image_tree, tmp_path: Path, fast_path: bool
):
    tree = image_tree("tree", {"train": 4, "val": 1})
    ckpt_path = trained_checkpoint(
        "experiment=none",
        "data=imagefolder",
        f"data.root={tree}",
        "data.num_classes=3",
        "data.batch_size=4",
        "data.num_workers=0",
        f"data.fast_path={fast_path}",
        "model.img_size=16",
        "model.patch_size=4",
    )
    export(ckpt_path, tmp_path / "export")
    paths = rgb_inputs(tree, tmp_path / "inputs")
    output = tmp_path / "predictions.csv"
    cfg = dict(ckpt_path=str(ckpt_path), inputs=str(tmp_path / "inputs"), top_k=3, batch_size=2)
    predict(OmegaConf.create(cfg | dict(device="cpu", output=str(output))))

    predicted = read_predictions(output)
    consumed = probabilities(tmp_path / "export", paths)
    for path, probs in zip(paths, consumed, strict=True):
        by_class = predicted[str(path)]
        assert next(iter(by_class)) == probs.argmax().item()
        for index, prob in by_class.items():
            assert prob == pytest.approx(probs[index].item(), abs=1e-5)


def test_onnx_is_one_file_that_runs_alone_and_matches_pytorch(trained_checkpoint, tmp_path: Path):
    ckpt_path = trained_checkpoint()
    written = export(ckpt_path, tmp_path / "export", onnx=True)
    assert written["onnx"] == tmp_path / "export" / ONNX_FILE
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(
        [CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE]
    )
    alone = tmp_path / "elsewhere" / ONNX_FILE
    alone.parent.mkdir()
    shutil.copy(tmp_path / "export" / ONNX_FILE, alone)
    session = onnxruntime.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 1, 8, 8)
    (logits,) = session.run(None, {"images": images.numpy()})
    model, _ = load_export(tmp_path / "export")
    with torch.no_grad():
        expected = model(images).numpy()
    assert logits.shape == (5, 10)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_only_weights_of_2_gb_or_more_go_beside_the_onnx_file():
    with torch.device("meta"):
        vit_l = VisionTransformer(embed_dim=1024, depth=24, num_heads=16)  # 1.2 GB
        vit_h = VisionTransformer(patch_size=14, embed_dim=1280, depth=32, num_heads=16)  # 2.5
    assert not needs_external_data(vit_l)
    assert needs_external_data(vit_h)


@pytest.mark.parametrize(
    ("overrides", "task"),
    [
        (["experiment=digits_mae_pretrain"], "vitlab.tasks.mae.MAEPretrainTask"),
        (
            [
                "experiment=digits_segmentation",
                "data.split_sizes={train:8,val:4,test:4}",
                "data.batch_size=4",
            ],
            "vitlab.tasks.segmentation.SegmentationTask",
        ),
    ],
    ids=["mae", "segmentation"],
)
def test_a_checkpoint_without_a_classifier_is_refused_in_one_line_naming_its_task(
    trained_checkpoint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    overrides: list[str],
    task: str,
):
    ckpt_path = trained_checkpoint(*overrides, f"paths.data_dir={tmp_path / 'data'}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(ckpt_path), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: ckpt_path: {ckpt_path} is a checkpoint of {task}, which has no classifier; "
        "give one of a classification, fine-tuning or linear-probe run\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope.ckpt"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: ckpt_path: no such file: {tmp_path / 'nope.ckpt'}\n"


def test_exporting_onto_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "any.ckpt"), str(tmp_path / "taken")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: out_dir: {tmp_path / 'taken'} is a file; give a folder to write into\n"
    )
