"""Class names that travel in checkpoints, so a trained model's predictions can be named on a
machine that does not have its data."""

from __future__ import annotations

from typing import Any


class NamedClasses:
    """Mixin for a LightningDataModule with ``class_names``: Lightning saves a DataModule's
    ``state_dict`` into every checkpoint, under the DataModule's class name."""

    class_names: list[str] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names)} if self.class_names else {}
