"""What predict.py writes for tasks that predict masks or boxes (``RecipeTask.prediction``):
overlays to look at, files to parse. For each image, under the directory of ``output``:

- segmentation: ``masks/<stem>.png`` (one channel, pixel = class index, at the image's own
  size: the logits are resized back before the argmax) and ``overlays/<stem>.png`` (the image
  with each class painted over it in its own colour, background left clear);
- detection: ``overlays/<stem>.png`` (boxes drawn with their class and score) and one
  ``boxes.json`` for all images: ``{path: [{"box": [x1, y1, x2, y2], "label", "name",
  "score"}]}`` in the image's own pixels (the letterbox undone), scores above ``score_thresh``.

Overlays are for looking at: drawn on the image enlarged (nearest neighbour, by a whole factor)
to at least ``OVERLAY_MIN_SIDE`` pixels on its shorter side, so that a 32-pixel canvas shows
its masks and labels legibly; a detection overlay shows, of boxes overlapping by more than
``DISPLAY_IOU``, the highest-scoring one whatever its class (the detector's own suppression is
per class, so one digit may carry a box of each class it resembles; ``boxes.json`` keeps them
all).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from torchvision import tv_tensors
from torchvision.ops import nms
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from vitlab.checkpoint_file import TrainedRun

# the shorter side an overlay is enlarged to, at least
OVERLAY_MIN_SIDE = 256
# boxes overlapping more than this show only the highest-scoring one, of any class
DISPLAY_IOU = 0.5


def enlargement(height: int, width: int) -> int:
    """The whole factor that brings an image's shorter side to ``OVERLAY_MIN_SIDE`` or more."""
    return max(1, math.ceil(OVERLAY_MIN_SIDE / min(height, width)))


def enlarged(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """An image (..., H, W) with each pixel repeated ``factor`` times along each side."""
    return pixels.repeat_interleave(factor, -1).repeat_interleave(factor, -2)


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
    factor = enlargement(*mask.shape)
    overlay = draw_segmentation_masks(
        enlarged(original, factor),
        enlarged(mask, factor)[None] == classes[:, None, None],
        alpha=0.5,
        colors=palette(len(names))[1:],
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
    overlay (``box_overlay``)."""
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
    return detections, box_overlay(original, boxes, labels, scores, names)


def box_overlay(
    original: torch.Tensor,
    boxes: torch.Tensor,
    labels: list[int],
    scores: list[float],
    names: list[str],
) -> torch.Tensor:
    """The image enlarged, with the boxes that survive class-agnostic suppression drawn on it in
    their class's colour, each labelled with its class and score on a filled tag."""
    shown = nms(boxes.float(), torch.tensor(scores, dtype=torch.float), DISPLAY_IOU).tolist()
    factor = enlargement(*original.shape[-2:])
    if not shown:
        return enlarged(original, factor)
    colours = palette(len(names))
    return draw_bounding_boxes(
        enlarged(original, factor),
        boxes[shown] * factor,
        labels=[f"{names[labels[i]]} {scores[i]:.2f}" for i in shown],
        colors=[colours[labels[i]] for i in shown],
        width=2,
        label_colors="black",
        fill_labels=True,
    )
