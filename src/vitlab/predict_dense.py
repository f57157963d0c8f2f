"""What predict.py writes for tasks that predict masks or boxes (``RecipeTask.prediction``):
overlays to look at, files to parse. For each image, under the directory of ``output``:

- segmentation: ``masks/<stem>.png`` (one channel, pixel = class index, at the image's own
  size: the logits are resized back before the argmax) and ``overlays/<stem>.png`` (the image
  with each class painted over it in its own colour, background left clear);
- detection: ``overlays/<stem>.png`` (boxes drawn with their class and score) and one
  ``boxes.json`` for all images: ``{path: [{"box": [x1, y1, x2, y2], "label", "name",
  "score"}]}`` in the image's own pixels (the letterbox undone), scores above ``score_thresh``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from torchvision import tv_tensors
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from vitlab.checkpoint_file import TrainedRun


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


class Overlays:
    """What a dense prediction writes of every image: ``overlays/<stem>.png`` beside ``output``."""

    def __init__(self, trained: TrainedRun, cfg: DictConfig):
        self.names = trained.class_names
        self.out_dir = Path(cfg.output).expanduser().parent
        self.count = 0

    def save_overlay(self, overlay: torch.Tensor, path: Path) -> None:
        save_png(overlay, self.out_dir / "overlays" / f"{path.stem}.png")
        self.count += 1

    def close(self) -> None:
        Console().print(f"{self.count} overlays written to {self.out_dir / 'overlays'}")


class MaskWriter(Overlays):
    """Segmentation (``prediction = "masks"``): ``masks/<stem>.png`` and an overlay per image."""

    def add(self, paths: Sequence[Path], logits: torch.Tensor) -> None:
        for path, image_logits in zip(paths, logits, strict=True):
            original = rgb_pixels(path)
            mask, overlay = segment(image_logits, original, self.names)
            save_png(mask, self.out_dir / "masks" / f"{path.stem}.png")
            self.save_overlay(overlay, path)


class BoxWriter(Overlays):
    """Detection (``prediction = "boxes"``): an overlay per image and ``boxes.json`` for all."""

    def __init__(self, trained: TrainedRun, cfg: DictConfig):
        super().__init__(trained, cfg)
        self.transform = trained.data.eval_transform()
        self.score_thresh = cfg.score_thresh
        self.boxes: dict[str, list[dict]] = {}

    def add(self, paths: Sequence[Path], detections: list[dict[str, torch.Tensor]]) -> None:
        for path, found in zip(paths, detections, strict=True):
            original = rgb_pixels(path)
            placement = letterbox_inverse(self.transform, *original.shape[-2:])
            self.boxes[str(path)], overlay = detect(
                found, original, self.names, placement, self.score_thresh
            )
            self.save_overlay(overlay, path)

    def close(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "boxes.json").write_text(json.dumps(self.boxes, indent=1))
        super().close()


def segment(
    logits: torch.Tensor, original: torch.Tensor, names: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The class mask (H, W) uint8 at the original image's size, from one image's logits
    (C, h, w), and the overlay."""
    resized = F.interpolate(logits[None].float(), size=original.shape[-2:], mode="bilinear")
    mask = resized.argmax(1)[0].cpu()
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


def detect(
    found: dict[str, torch.Tensor],
    original: torch.Tensor,
    names: list[str],
    placement: tuple[float, float, float],
    score_thresh: float,
) -> tuple[list[dict], torch.Tensor]:
    """One image's detections above ``score_thresh`` in the original image's pixels, and the
    overlay."""
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
