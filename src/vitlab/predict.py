"""Batch prediction with a train.py checkpoint: image files in, a top-k table and a CSV out.

The model is rebuilt from the run config stored in the checkpoint, and every image goes
through that run's evaluation preprocessing: for digits, grayscale, resized to the model's
input and standardised with the training split's statistics; for RGB datasets, the
resize + center-crop of ``build_eval_transform``, then ``Normalize``. Class names come from the
checkpoint (``NamedClasses``), so the training data need not be here.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.table import Table
from torchvision.transforms import v2

from vitlab.data.base import ImageDataModule
from vitlab.data.digits import DigitsDataModule
from vitlab.data.imagefolder import DECODE_ERRORS, is_image, load_image
from vitlab.data.named_classes import stored_class_names
from vitlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize, build_eval_transform
from vitlab.export import trained_vit
from vitlab.run import UserError, build, existing_file

Preprocess = Callable[[Path], torch.Tensor]
# rows shown on the console; the CSV holds them all
TABLE_ROWS = 50


def predict(cfg: DictConfig) -> dict[str, float]:
    if not cfg.get("ckpt_path") or not cfg.get("inputs"):
        raise UserError(
            "predict.py needs a checkpoint and images: "
            "python predict.py ckpt_path=<run dir>/checkpoints/last.ckpt inputs=<image or folder>"
        )
    for key in ("top_k", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise UserError(f"{key} must be a whole number of at least 1, got {cfg[key]!r}")
    paths = image_paths(Path(cfg.inputs).expanduser())
    ckpt_path = existing_file(cfg.ckpt_path, "ckpt_path")
    model, run_cfg = trained_vit(ckpt_path)
    device = torch.device(resolve_device(cfg.device))
    model.to(device)
    preprocess = eval_preprocessing(run_cfg.data, model.patch_embed.img_size[0])
    class_names = stored_class_names(ckpt_path, run_cfg.data._target_)
    names = class_names or [str(index) for index in range(model.num_classes)]

    top_k = min(cfg.top_k, model.num_classes)
    rows = []
    for batch_paths in batched(paths, cfg.batch_size):
        images = torch.stack([load(preprocess, path) for path in batch_paths]).to(device)
        with torch.inference_mode():
            probs, classes = model(images).float().softmax(dim=-1).topk(top_k, dim=-1)
        rows += [
            (str(path), p.tolist(), c.tolist())
            for path, p, c in zip(batch_paths, probs.cpu(), classes.cpu(), strict=True)
        ]
    output = Path(cfg.output).expanduser()
    write_csv(output, rows, names, top_k)
    print_table(rows, names, output)
    return {}


def resolve_device(device: str) -> str:
    """``auto``: CUDA when available, else the CPU; otherwise a device this machine has."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {device} was asked for, but this machine has no CUDA device")
    return device


def image_paths(inputs: Path) -> list[Path]:
    """``inputs`` itself, or every image file below it, sorted."""
    if inputs.is_file():
        return [inputs]
    if not inputs.is_dir():
        raise UserError(f"inputs: no such file or directory: {inputs}")
    paths = sorted(path for path in inputs.rglob("*") if path.is_file() and is_image(path.name))
    if not paths:
        raise UserError(f"inputs: no image files (JPEG, PNG, ...) under {inputs}")
    return paths


def eval_preprocessing(data_cfg: DictConfig, img_size: int) -> Preprocess:
    """The run's evaluation preprocessing of one image file."""
    data_class = get_class(data_cfg._target_)
    if issubclass(data_class, DigitsDataModule):
        return digits_preprocessing(data_cfg, img_size)
    if issubclass(data_class, ImageDataModule):
        transform = v2.Compose(
            [
                build_eval_transform(
                    img_size,
                    data_cfg.get("eval_crop_pct", 0.875),
                    fast=data_cfg.get("fast_path", True),
                ),
                Normalize(data_cfg.get("mean", IMAGENET_MEAN), data_cfg.get("std", IMAGENET_STD)),
            ]
        )
        return lambda path: transform(load_image(str(path)))
    raise UserError(f"data: predict.py knows no image preprocessing for {data_cfg._target_}")


def digits_preprocessing(data_cfg: DictConfig, img_size: int) -> Preprocess:
    """Grayscale in [0, 1], resized like the digits (bilinear, antialiased), then standardised
    with the statistics of the run's training split (recomputed: the split is fixed by seed)."""
    datamodule = build(data_cfg, "data")
    datamodule.setup()
    normalize = datamodule.splits["test"].transform

    def preprocess(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            gray = v2.functional.to_dtype(
                v2.functional.pil_to_tensor(image.convert("L")), torch.float32, scale=True
            )
        return normalize(v2.functional.resize(gray, [img_size, img_size], antialias=True))

    return preprocess


def load(preprocess: Preprocess, path: Path) -> torch.Tensor:
    try:
        return preprocess(path)
    except DECODE_ERRORS as error:
        raise UserError(f"inputs: cannot read image {path}: {error}") from None


def batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


Row = tuple[str, list[float], list[int]]


def write_csv(output: Path, rows: list[Row], names: list[str], top_k: int) -> None:
    """One line per image: ``path``, then ``class_r``, ``name_r``, ``prob_r`` for ranks 1..k."""
    output.parent.mkdir(parents=True, exist_ok=True)
    header = ["path"] + [f"{c}_{r}" for r in range(1, top_k + 1) for c in ("class", "name", "prob")]
    with output.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for path, probs, classes in rows:
            ranked = [(c, names[c], f"{p:.6f}") for p, c in zip(probs, classes, strict=True)]
            writer.writerow([path] + [value for entry in ranked for value in entry])


def print_table(rows: list[Row], names: list[str], output: Path) -> None:
    table = Table(title="predictions", show_header=True)
    table.add_column("image")
    table.add_column("class")
    table.add_column("prob", justify="right")
    table.add_column("top-k")
    for path, probs, classes in rows[:TABLE_ROWS]:
        ranked = ", ".join(f"{names[c]} {p:.2f}" for p, c in zip(probs, classes, strict=True))
        table.add_row(Path(path).name, names[classes[0]], f"{probs[0]:.3f}", ranked)
    console = Console()
    console.print(table)
    if len(rows) > TABLE_ROWS:
        console.print(f"... {len(rows) - TABLE_ROWS} more")
    console.print(f"{len(rows)} predictions written to {output}")
