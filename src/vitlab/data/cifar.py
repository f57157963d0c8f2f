"""CIFAR-10 / CIFAR-100 through ``torchvision.datasets``, in their python-pickle on-disk format."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset
from torchvision.datasets import CIFAR10, CIFAR100

from vitlab.data.base import carve_split
from vitlab.data.rgb import ImageDataModule


def present_files_only(dataset: type[CIFAR10]) -> type[CIFAR10]:
    """``dataset`` accepting its files when they exist instead of hashing them on every start.

    ``download()`` still verifies the archive's md5; re-hashing on load would also reject the
    small re-encoded copies that tests write in the same format.
    """
    return type(
        f"{dataset.__name__}Files",
        (dataset,),
        {
            "train_list": [[name, None] for name, _ in dataset.train_list],
            "test_list": [[name, None] for name, _ in dataset.test_list],
            "meta": {**dataset.meta, "md5": None},
        },
    )


DATASETS: dict[int, type[CIFAR10]] = {
    10: present_files_only(CIFAR10),
    100: present_files_only(CIFAR100),
}


def missing_files(dataset_class: type[CIFAR10], root: str | os.PathLike) -> list[str]:
    folder = Path(root) / dataset_class.base_folder
    names = [name for name, _ in dataset_class.train_list + dataset_class.test_list]
    names.append(dataset_class.meta["filename"])
    return [name for name in names if not (folder / name).is_file()]


class CIFARDataModule(ImageDataModule):
    """CIFAR-``num_classes`` (10 or 100) under ``root``; test: the test batch.

    val: ``val_fraction`` of train held out (fixed by ``seed``), or the test batch when 0.
    ``download`` fetches missing files (once, on local rank 0); without it missing files are an
    error that says where to put them.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        img_size: int,
        num_classes: int = 10,
        download: bool = False,
        val_fraction: float = 0.0,
        **kwargs: Any,
    ):
        if num_classes not in DATASETS:
            raise ValueError(f"CIFAR has 10 or 100 classes, got num_classes={num_classes}")
        super().__init__(img_size=img_size, num_classes=num_classes, **kwargs)
        self.root = Path(root).expanduser()
        self.dataset_class = DATASETS[num_classes]
        self.download = download
        self.val_fraction = val_fraction
        self.class_names: list[str] = []

    def missing_files_message(self) -> str:
        folder = self.root / self.dataset_class.base_folder
        missing = ", ".join(missing_files(self.dataset_class, self.root))
        return (
            f"CIFAR-{self.num_classes}: missing {missing} in {folder}; "
            f"download the python version from {self.dataset_class.url}, extract it into "
            f"{self.root}, or set data.download=true"
        )

    def require_files(self) -> None:
        if missing_files(self.dataset_class, self.root):
            raise FileNotFoundError(self.missing_files_message())

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            self.dataset_class(self.root, train=True, download=True)
        except (OSError, RuntimeError) as error:
            raise FileNotFoundError(
                f"download failed ({error}); {self.missing_files_message()}"
            ) from error

    def build_rgb_splits(
        self, train_transform: Callable, eval_transform: Callable
    ) -> dict[str, Dataset]:
        self.require_files()

        def dataset(train: bool, transform: Callable) -> CIFAR10:
            return self.dataset_class(self.root, train=train, transform=transform)

        train, test = dataset(True, train_transform), dataset(False, eval_transform)
        self.class_names = list(train.classes)
        if self.val_fraction <= 0:
            return {"train": train, "val": test, "test": test}
        kept, held_out = carve_split(len(train), round(len(train) * self.val_fraction), self.seed)
        val = Subset(dataset(True, eval_transform), held_out)
        return {"train": Subset(train, kept), "val": val, "test": test}
