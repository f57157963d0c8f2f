"""Batch prediction with a train.py checkpoint: image files in, a top-k table and a CSV out.

    python predict.py ckpt_path=<run dir>/checkpoints/last.ckpt inputs=<image or folder>

The trained run is rebuilt from the checkpoint alone (``checkpoint_file.load_run``): its task
predicts (``predict_outputs``) and says what its predictions are (``prediction``), which picks
what is written. Class names come from the checkpoint, so the training data need not be here.
A classification, fine-tuning or linear-probe run's top-k classes go to a CSV (``output``) and a
table; a segmentation or detection run writes overlays and masks or boxes beside ``output``
(``vitlab.predict_dense``).

Images: ``inputs`` is one image file (any format PIL reads), or a folder searched recursively
for files named .jpg, .jpeg, .png, .webp, .bmp, .ppm, .tif or .tiff. They may have any size and
be grayscale, RGB, RGBA or palette images with 8 bits per channel (alpha is dropped; PIL clips
16-bit images to 8 bits rather than rescaling them): every image goes through the run's own
evaluation preprocessing, its DataModule's ``predict_transform``. For the
digits: grayscale, area-averaged to the digits' native 8x8 grid (a digit saved at 8x8, or
upscaled by a whole factor, gives the same input), resized to the model's input and
standardised with the training split's statistics. For RGB data: RGB, the shorter side resized
to ``img_size / eval_crop_pct``, center-cropped to ``img_size``, normalised. A file that does
not decode is a one-line error naming it.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.table import Table

from vitlab.checkpoint_file import TrainedRun, load_run
from vitlab.data.decode import DECODE_ERRORS, is_image
from vitlab.errors import UserError, existing_file, exit_on_user_error
from vitlab.predict_dense import BoxWriter, MaskWriter

log = logging.getLogger(__name__)
Preprocess = Callable[[Path], torch.Tensor]
Row = tuple[str, list[float], list[int]]
# rows shown on the console; the CSV holds them all
TABLE_ROWS = 50


def main(cfg: DictConfig) -> None:
    """predict.py's job: a user's mistake is one line on the console and in the run's log."""
    with exit_on_user_error(log.error):
        predict(cfg)


def predict(cfg: DictConfig) -> None:
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
    device = torch.device(resolve_device(cfg.device))
    trained = load_run(ckpt_path)
    writer = prediction_writer(trained, ckpt_path, cfg)
    task = trained.task.to(device).eval()
    preprocess = file_preprocessing(trained.data.predict_transform())
    for batch_paths in batched(paths, cfg.batch_size):
        images = torch.stack([load(preprocess, path) for path in batch_paths]).to(device)
        with torch.inference_mode():
            outputs = task.predict_outputs(images)
        writer.add(batch_paths, outputs)
    writer.close()


class Writer(Protocol):
    """Writes a task's predictions (``predict_outputs`` of batches of images) as files."""

    def __init__(self, trained: TrainedRun, cfg: DictConfig): ...

    def add(self, paths: Sequence[Path], outputs: Any) -> None: ...

    def close(self) -> None: ...


def prediction_writer(trained: TrainedRun, ckpt_path: Path, cfg: DictConfig) -> Writer:
    """The writer of what the trained task predicts (its ``prediction``)."""
    writer = WRITERS.get(trained.task.prediction)
    if writer is None:
        raise UserError(
            f"ckpt_path: {ckpt_path} is a checkpoint of {trained.task_name}, which predicts "
            "nothing; give one of a classification, fine-tuning, linear-probe, segmentation or "
            "detection run"
        )
    return writer(trained, cfg)


class ClassTable:
    """Classification (``prediction = "classes"``): the ``top_k`` classes of each image, most
    probable first, as a CSV at ``output`` and a table on the console."""

    def __init__(self, trained: TrainedRun, cfg: DictConfig):
        self.names = trained.class_names
        self.top_k = min(cfg.top_k, len(self.names))
        self.output = Path(cfg.output).expanduser()
        self.rows: list[Row] = []

    def add(self, paths: Sequence[Path], probabilities: torch.Tensor) -> None:
        probs, classes = probabilities.topk(self.top_k, dim=-1)
        self.rows += [
            (str(path), p.tolist(), c.tolist())
            for path, p, c in zip(paths, probs.cpu(), classes.cpu(), strict=True)
        ]

    def close(self) -> None:
        write_csv(self.output, self.rows, self.names, self.top_k)
        print_table(self.rows, self.names, self.output)


def file_preprocessing(prepare: Callable[[Image.Image], torch.Tensor]) -> Preprocess:
    """``prepare`` applied to an image file's contents."""

    def preprocess(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return prepare(image)

    return preprocess


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


def load(preprocess: Preprocess, path: Path) -> torch.Tensor:
    try:
        return preprocess(path)
    except DECODE_ERRORS as error:
        raise UserError(f"inputs: cannot read image {path}: {error}") from None


def batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


# what predict.py writes, by the task's ``prediction``
WRITERS: dict[str, type[Writer]] = {"classes": ClassTable, "masks": MaskWriter, "boxes": BoxWriter}
