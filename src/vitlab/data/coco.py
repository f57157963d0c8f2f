"""Object detection data in COCO format: ``instances_*.json`` annotation files and images.

Layout read by ``CocoDetectionDataModule`` (COCO 2017 itself: ``split_names`` =
``{train: train2017, val: val2017, test: val2017}``)::

    <root>/annotations/instances_<name>.json
    <root>/<name>/<file_name of each image in that json>

Every image is letterboxed to the model's square input (longer side resized to ``img_size``,
then padded with zeros around it), its boxes moved with it; crowd annotations are left out.
Category ids (any, e.g. COCO's 1..90 with gaps) become labels 1..K in id order; 0 is
background, as torchvision's detection models expect, so ``num_classes`` = K + 1. A batch is
``(images (B, C, H, W), [{"boxes": (n, 4) xyxy float, "labels": (n,) int64}, ...])``.
``vitlab.data.digit_canvas`` writes such a tree (``generate=true``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vitlab.data.base import SPLITS, SplitsDataModule
from vitlab.data.digit_canvas import DEFAULT_SPLIT_SIZES, GeneratesDigitCanvas

Target = dict[str, torch.Tensor]


def layout_message(root: Path, names: Mapping[str, str]) -> str:
    example = next(iter(names.values()))
    return (
        f"expected {root}/annotations/instances_{example}.json and the images it names under "
        f"{root}/{example}/ (COCO format), one per split of data.split_names {dict(names)}; "
        "or data.generate=true to write the digit canvases there"
    )


class CocoDetectionFiles(Dataset):
    """One COCO split: (image (C, H, W) float, {"boxes", "labels"}); ``labels`` maps category
    ids to labels."""

    def __init__(
        self,
        annotations: Path,
        images_dir: Path,
        labels: Mapping[int, int],
        mode: str,
        transform: v2.Transform,
    ):
        self.coco = COCO(str(annotations))
        self.ids = sorted(self.coco.imgs)
        self.images_dir, self.labels, self.mode, self.transform = (
            images_dir,
            labels,
            mode,
            transform,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        info = self.coco.imgs[self.ids[index]]
        with Image.open(self.images_dir / info["file_name"]) as file:
            image = tv_tensors.Image(v2.functional.pil_to_tensor(file.convert(self.mode)))
        annotations = [a for a in self.coco.imgToAnns[info["id"]] if not a.get("iscrowd", 0)]
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4),
            format="XYWH",
            canvas_size=tuple(image.shape[-2:]),
        )
        labels = torch.tensor([self.labels[a["category_id"]] for a in annotations]).long()
        image, target = self.transform(image, {"boxes": boxes, "labels": labels})
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"],
        }


class CocoDetectionDataModule(GeneratesDigitCanvas, SplitsDataModule):
    """COCO-format splits (see the module docstring), letterboxed to ``img_size`` and
    standardised, without augmentation. ``split_names`` names each split's json and image
    folder; ``generate=True`` writes the digit canvases into ``root`` when it does not exist
    yet (``GeneratesDigitCanvas``)."""

    def __init__(
        self,
        root: str | os.PathLike,
        img_size: int,
        num_classes: int,
        in_chans: int = 3,
        batch_size: int = 16,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        split_names: Mapping[str, str] | None = None,
        augment: bool = False,
        generate: bool = False,
        split_sizes: Mapping[str, int] = DEFAULT_SPLIT_SIZES,
        canvas: int = 32,
        generate_seed: int = 0,
        num_workers: int | None = 0,
        epoch_seed: int | None = None,
    ):
        super().__init__(
            img_size,
            in_chans,
            num_classes,
            batch_size,
            mean,
            std,
            augment,
            num_workers,
            epoch_seed=epoch_seed,
        )
        self.root = Path(root).expanduser()
        self.split_names = dict(split_names or {split: split for split in SPLITS})
        self.mode = "L" if in_chans == 1 else "RGB"
        self.set_generation(generate, split_sizes, canvas, generate_seed)

    def letterbox(self) -> v2.Compose:
        """Longer side to ``img_size`` (boxes scaled with it), zero padding around it to a
        square (``CenterCrop`` pads), [0, 1], standardised."""
        return v2.Compose(
            [
                v2.Resize(None, max_size=self.img_size, antialias=True),
                v2.CenterCrop(self.img_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )

    def eval_transform(self) -> v2.Compose:
        """``letterbox``, then boxes as xyxy, empty ones dropped."""
        return v2.Compose(
            [self.letterbox(), v2.ConvertBoundingBoxFormat("XYXY"), v2.SanitizeBoundingBoxes()]
        )

    def predict_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        transform = self.letterbox()
        return lambda image: transform(v2.functional.pil_to_tensor(image.convert(self.mode)))

    def collate(self, samples: list[Any]) -> tuple[torch.Tensor, list[Target]]:
        images, targets = zip(*samples, strict=True)
        return torch.stack(images), list(targets)

    def build_splits(self) -> dict[str, Dataset]:
        names = self.split_names
        files = {
            split: (self.root / "annotations" / f"instances_{name}.json", self.root / name)
            for split, name in names.items()
        }
        for instances, images_dir in files.values():
            if not instances.is_file() or not images_dir.is_dir():
                raise FileNotFoundError(f"no {instances}: {layout_message(self.root, names)}")
        categories = COCO(str(files["train"][0])).cats
        if len(categories) + 1 != self.num_classes:
            raise ValueError(
                f"data.num_classes is {self.num_classes} but {files['train'][0]} has "
                f"{len(categories)} categories: set it to {len(categories) + 1} (with background)"
            )
        labels = {category: label for label, category in enumerate(sorted(categories), start=1)}
        self.class_names = ["background", *(categories[c]["name"] for c in sorted(categories))]
        transform = self.eval_transform()
        return {
            split: CocoDetectionFiles(instances, images_dir, labels, self.mode, transform)
            for split, (instances, images_dir) in files.items()
        }
