"""Class names that travel in checkpoints, so a trained model's predictions can be named on a
machine that does not have its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class


class NamedClasses:
    """Mixin for a LightningDataModule with ``class_names``: Lightning saves a DataModule's
    ``state_dict`` into every checkpoint, under the DataModule's class name."""

    class_names: list[str] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names)} if self.class_names else {}


def stored_class_names(ckpt_path: Path, datamodule_target: str) -> list[str] | None:
    """The class names a ``NamedClasses`` DataModule of class ``datamodule_target`` saved."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    state = checkpoint.get(get_class(datamodule_target).__qualname__) or {}
    return state.get("class_names")
