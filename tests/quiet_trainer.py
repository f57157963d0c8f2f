"""The Trainer the unit tests fit with: CPU, and no logger, checkpoints, progress bar or model
summary unless a test asks for them."""

from __future__ import annotations

from typing import Any

import lightning as L

QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(**(QUIET | kwargs))
