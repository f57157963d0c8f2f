"""A trained classifier as files that run without vitlab's training or data code.

    python -m vitlab.export CKPT OUT_DIR [--onnx]

CKPT is a checkpoint of a classification, fine-tuning or linear-probe run of train.py (MAE
pretraining and segmentation checkpoints hold no classifier). OUT_DIR receives:

  model.safetensors  the VisionTransformer's state dict (timm names, nothing else); a linear
                     probe's BatchNorm + Linear head is folded into one Linear
  config.json        the model's constructor arguments, its class names and its preprocessing
  model.onnx         with --onnx: the same model, one self-contained file (weights inside;
                     only weights of 2 GB or more go to model.onnx.data beside it), batch size
                     dynamic, checked against PyTorch on random images

config.json:

  {"model": {...}, "class_names": [...], "preprocessing": [{"op": ...}, ...]}

  model          VisionTransformer(**config["model"]) (vitlab.models.vit) builds the model that
                 model.safetensors loads into. It takes float32 images (N, in_chans, img_size,
                 img_size), as the preprocessing makes them, and returns logits (N, num_classes);
                 their softmax is what predict.py reports.
  class_names    the name of each logit, in order.
  preprocessing  the steps from an image file to one model input, exactly as the run's
                 evaluation prepares images (and predict.py does), applied in order to the image
                 as PIL opens it (Image.open(path)):

  {"op": "convert", "mode": "L" | "RGB"}
      image.convert(mode): 8-bit grayscale or RGB (an alpha channel is dropped).
  {"op": "resize", "size": [H, W] | S, "interpolation": "box" | "bilinear" | "bicubic"}
      To H x W; an int S sets the shorter side to S and the longer one to
      int(S * longer / shorter). On a PIL image: image.resize((W, H), <PIL filter of that name>).
      On a tensor: nothing if it is H x W already, else
      torch.nn.functional.interpolate(x[None], (H, W), mode=interpolation,
      align_corners=False, antialias=True)[0] (a uint8 tensor stays uint8).
  {"op": "center_crop", "size": [H, W]}
      The H x W window whose top is round((height - H) / 2) and whose left is
      round((width - W) / 2) (Python's round, halves to even).
  {"op": "to_tensor"}
      The PIL image's pixels as a uint8 tensor (C, H, W).
  {"op": "scale"}
      uint8 to float32 in [0, 1]: x.float() / 255.
  {"op": "normalize", "mean": [...], "std": [...]}
      (x[c] - mean[c]) / std[c] for each channel c.

Digits runs convert to L, area-average (box) to the digits' native 8x8 grid, scale, resize to
img_size (bilinear) and normalize; RGB runs convert to RGB, resize the shorter side to
img_size / eval_crop_pct (bicubic), center-crop img_size, scale and normalize.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vitlab.checkpoint_file import load_run
from vitlab.data.base import SplitsDataModule
from vitlab.errors import UserError, existing_file, exit_on_user_error
from vitlab.extras import require
from vitlab.models.vit import VisionTransformer

WEIGHTS_FILE, CONFIG_FILE, ONNX_FILE = "model.safetensors", "config.json", "model.onnx"
# fp32 kernels of ONNX Runtime and PyTorch agree far closer than this on a ViT's logits
ONNX_TOLERANCE = 1e-4
# protobuf caps an ONNX file at 2 GiB: weights under 2 GB leave the graph room beside them
ONNX_INLINE_BYTES = 2 * 10**9


@dataclass(frozen=True)
class TrainedClassifier:
    """What a checkpoint of a classification task deploys.

    ``model``: the plain ``VisionTransformer`` (eval mode, on the CPU) that
    ``VisionTransformer(**model_config)`` builds; ``data``: the run's DataModule, built from
    the stored config without reading any data (its ``predict_transform`` prepares images);
    ``class_names``: one per logit (the indices as text when the run stored none).
    """

    model: VisionTransformer
    model_config: dict[str, Any]
    data: SplitsDataModule
    class_names: list[str]


def trained_classifier(ckpt_path: Path) -> TrainedClassifier:
    """The classifier of a train.py checkpoint: its run rebuilt (``load_run``), and its task, if it
    predicts classes, asked for its classifier."""
    trained = load_run(ckpt_path)
    if trained.task.prediction != "classes":
        raise UserError(
            f"ckpt_path: {ckpt_path} is a checkpoint of {trained.task_name}, which has no "
            "classifier; give one of a classification, fine-tuning or linear-probe run"
        )
    model_config = {k: v for k, v in trained.task.hparams["model"].items() if k != "_target_"}
    return TrainedClassifier(
        model=trained.task.classifier(),
        model_config=model_config,
        data=trained.data,
        class_names=trained.class_names,
    )


def export_config(trained: TrainedClassifier) -> dict[str, Any]:
    return {
        "model": trained.model_config,
        "class_names": trained.class_names,
        "preprocessing": trained.data.preprocessing(),
    }


def export_safetensors(model: VisionTransformer, out_dir: Path) -> Path:
    # contiguous copies: safetensors refuses views that share storage
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, out_dir / WEIGHTS_FILE)
    return out_dir / WEIGHTS_FILE


def example_images(model: VisionTransformer, batch: int = 2) -> torch.Tensor:
    channels = model.patch_embed.proj.in_channels
    return torch.randn(
        batch, channels, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(0)
    )


def needs_external_data(model: torch.nn.Module) -> bool:
    """Whether the weights are too large to sit inside one ONNX file."""
    state = model.state_dict().values()
    return sum(tensor.numel() * tensor.element_size() for tensor in state) >= ONNX_INLINE_BYTES


def export_onnx(model: VisionTransformer, out_dir: Path) -> float:
    """``model.onnx`` with a dynamic batch, weights inside unless ``needs_external_data``;
    returns its max abs logit difference from PyTorch."""
    import onnxruntime

    path = out_dir / ONNX_FILE
    torch.onnx.export(
        model,
        (example_images(model),),
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        external_data=needs_external_data(model),
    )
    images = example_images(model, batch=3)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    difference = (torch.from_numpy(logits) - expected).abs().max().item()
    if difference > ONNX_TOLERANCE:
        raise RuntimeError(
            f"ONNX logits differ from PyTorch by {difference:.2e} > {ONNX_TOLERANCE}"
        )
    return difference


def export(ckpt_path: Path, out_dir: Path, onnx: bool = False) -> dict[str, Path]:
    """Writes the files the module docstring lists; returns them by kind."""
    if onnx:
        require("onnx", "--onnx")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out_dir: {out_dir} is a file; give a folder to write into")
    trained = trained_classifier(existing_file(ckpt_path, "ckpt_path"))
    config = export_config(trained)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"weights": export_safetensors(trained.model, out_dir)}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    written["config"] = out_dir / CONFIG_FILE
    if onnx:
        difference = export_onnx(trained.model, out_dir)
        print(f"ONNX matches PyTorch: max abs logit difference {difference:.2e}")
        written["onnx"] = out_dir / ONNX_FILE
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitlab.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ckpt_path", type=Path, help="a checkpoint written by train.py")
    parser.add_argument("out_dir", type=Path, help="the folder the files go to (made if needed)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx and check it")
    args = parser.parse_args(argv)
    with exit_on_user_error(functools.partial(print, file=sys.stderr)):
        written = export(args.ckpt_path, args.out_dir, onnx=args.onnx)
    for kind, path in written.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
