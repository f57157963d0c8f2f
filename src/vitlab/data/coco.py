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
``vitlab.data.digit_canvas`` writes such a tree and reads it with this DataModule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from vitlab.data.base import SPLITS, SplitsDataModule
from vitlab.data.transforms import IMAGENET_MEAN, IMAGENET_STD

Target = dict[str, torch.Tensor]


def layout_message(root: Path, names: Mapping[str, str]) -> str:
    example = next(iter(names.values()))
    return (
        f"expected {root}/annotations/instances_{example}.json and the images it names under "
        f"{root}/{example}/ (COCO format), one per split of data.split_names {dict(names)} "
        "(data=digit_canvas_detection writes such a tree)"
    )


class CocoDetectionFiles(Dataset):
    """One COCO split: (image (C, H, W) uint8, {"boxes", "labels"}); ``labels`` maps category
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


class CocoDetectionDataModule(SplitsDataModule):
    """COCO-format splits (see the module docstring), letterboxed to ``img_size`` without
    augmentation; the batch step standardises the images. ``split_names`` names each split's
    json and image folder."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split_names: Mapping[str, str] | None = None,
        in_chans: int = 3,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 16,
        augment: bool = False,
        **shared: Any,
    ):
        super().__init__(
            in_chans=in_chans,
            mean=mean,
            std=std,
            batch_size=batch_size,
            augment=augment,
            **shared,
        )
        self.root = Path(root).expanduser()
        self.split_names = dict(split_names or {split: split for split in SPLITS})
        self.mode = "L" if in_chans == 1 else "RGB"

    def letterbox(self) -> v2.Compose:
        """Longer side to ``img_size`` (boxes scaled with it), zero padding around it to a
        square (``CenterCrop`` pads)."""
        size = self.image.size
        return v2.Compose([v2.Resize(None, max_size=size, antialias=True), v2.CenterCrop(size)])

    def eval_transform(self) -> v2.Compose:
        """``letterbox``, then boxes as xyxy, empty ones dropped."""
        return v2.Compose(
            [self.letterbox(), v2.ConvertBoundingBoxFormat("XYXY"), v2.SanitizeBoundingBoxes()]
        )

    def read_image(self, image: Image.Image) -> torch.Tensor:
        return v2.functional.pil_to_tensor(image.convert(self.mode))

    def predict_geometry(self) -> v2.Compose:
        """``letterbox``: an image without boxes."""
        return self.letterbox()

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
