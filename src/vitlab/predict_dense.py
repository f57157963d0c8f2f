"""predict.py for segmentation and detection checkpoints: overlays to look at, files to parse.

For each image, under the directory of ``output``:

- segmentation: ``masks/<stem>.png`` (one channel, pixel = class index, at the image's own
  size: the logits are resized back before the argmax) and ``overlays/<stem>.png`` (the image
  with each class painted over it in its own colour, background left clear);
- detection: ``overlays/<stem>.png`` (boxes drawn with their class and score) and one
  ``boxes.json`` for all images: ``{path: [{"box": [x1, y1, x2, y2], "label", "name",
  "score"}]}`` in the image's own pixels (the letterbox undone), scores above ``score_thresh``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from PIL import Image
from torchvision import tv_tensors
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from vitlab.checkpoint_file import load_task, read_checkpoint, stored_class_names, stored_config
from vitlab.tasks.detection import DetectionTask
from vitlab.tasks.segmentation import SegmentationTask

DenseTask = SegmentationTask | DetectionTask


def trained_dense(ckpt_path: Path) -> tuple[DenseTask, Any, list[str]] | None:
    """The task, DataModule and class names of a segmentation or detection checkpoint; None for
    any other task."""
    checkpoint = read_checkpoint(ckpt_path)
    run_cfg = stored_config(checkpoint, ckpt_path)
    if not issubclass(get_class(run_cfg.task._target_), (SegmentationTask, DetectionTask)):
        return None
    task = load_task(ckpt_path, run_cfg)
    names = stored_class_names(checkpoint, run_cfg.data._target_)
    num_classes = task.model.num_classes
    return task, instantiate(run_cfg.data), names or [str(c) for c in range(num_classes)]


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """A fixed colour per class, far apart in hue."""
    hues = np.linspace(0, 1, num_classes, endpoint=False)
    hsv = np.stack([hues, np.full_like(hues, 0.9), np.full_like(hues, 1.0)], axis=1)
    rgb = Image.fromarray((hsv[None] * 255).astype(np.uint8), mode="HSV").convert("RGB")
    return [tuple(int(v) for v in colour) for colour in np.array(rgb)[0]]


def rgb_pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


def save_png(pixels: torch.Tensor, path: Path) -> None:
    """(C, H, W) uint8 (or (H, W)) to a PNG file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = pixels.numpy() if pixels.ndim == 2 else pixels.permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


@torch.inference_mode()
def segment(
    task: SegmentationTask, image: torch.Tensor, original: torch.Tensor, names: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The class mask (H, W) uint8 at the original image's size, and the overlay."""
    logits = task(image[None])
    mask = F.interpolate(logits, size=original.shape[-2:], mode="bilinear").argmax(1)[0].cpu()
    classes = torch.arange(1, len(names))  # background stays clear
    overlay = draw_segmentation_masks(
        original, mask[None] == classes[:, None, None], alpha=0.5, colors=palette(len(names))[1:]
    )
    return mask.to(torch.uint8), overlay


def letterbox_inverse(transform, height: int, width: int) -> tuple[float, float, float]:
    """Where the image lands in the model's input after ``transform``: (left, top, scale), so
    that a point x of the input is ``(x - left) / scale`` in the image."""
    whole = tv_tensors.BoundingBoxes(
        torch.tensor([[0.0, 0.0, width, height]]), format="XYXY", canvas_size=(height, width)
    )
    pixels = tv_tensors.Image(torch.zeros(1, height, width, dtype=torch.uint8))
    _, placed = transform(pixels, {"boxes": whole, "labels": torch.zeros(1).long()})
    left, top, right, _ = placed["boxes"][0].tolist()
    return left, top, (right - left) / width


@torch.inference_mode()
def detect(
    task: DetectionTask,
    image: torch.Tensor,
    original: torch.Tensor,
    names: list[str],
    placement: tuple[float, float, float],
    score_thresh: float,
) -> tuple[list[dict], torch.Tensor]:
    """The detections above ``score_thresh`` in the original image's pixels, and the overlay."""
    (found,) = task(image[None])
    keep = found["scores"] >= score_thresh
    left, top, scale = placement
    boxes = (found["boxes"][keep].cpu() - torch.tensor([left, top, left, top])) / scale
    labels, scores = found["labels"][keep].tolist(), found["scores"][keep].tolist()
    detections = [
        {
            "box": [round(v, 2) for v in box.tolist()],
            "label": label,
            "name": names[label],
            "score": round(score, 4),
        }
        for box, label, score in zip(boxes, labels, scores, strict=True)
    ]
    colours = palette(len(names))
    overlay = draw_bounding_boxes(
        original,
        boxes,
        labels=[f"{names[label]} {score:.2f}" for label, score in zip(labels, scores, strict=True)],
        colors=[colours[label] for label in labels],
    )
    return detections, overlay


def predict_dense(
    task: DenseTask,
    datamodule: Any,
    names: list[str],
    paths: list[Path],
    out_dir: Path,
    device: torch.device,
    score_thresh: float,
) -> None:
    """Overlays and masks or boxes of every image in ``paths`` under ``out_dir``."""
    task = task.to(device).eval()
    prepare = datamodule.predict_transform()
    boxes = {}
    for path in paths:
        with Image.open(path) as file:
            image = prepare(file).to(device)
        original = rgb_pixels(path)
        if isinstance(task, SegmentationTask):
            mask, overlay = segment(task, image, original, names)
            save_png(mask, out_dir / "masks" / f"{path.stem}.png")
        else:
            placement = letterbox_inverse(datamodule.eval_transform(), *original.shape[-2:])
            boxes[str(path)], overlay = detect(
                task, image, original, names, placement, score_thresh
            )
        save_png(overlay, out_dir / "overlays" / f"{path.stem}.png")
    if isinstance(task, DetectionTask):
        (out_dir / "boxes.json").write_text(json.dumps(boxes, indent=1))
