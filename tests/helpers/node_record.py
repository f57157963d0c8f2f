"""A callback for the two-"node" test: each process writes what it trained on and its final
weights to ``<folder>/node_<global rank>.pt`` (only rank 0 saves checkpoints)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch


class NodeRecord(L.Callback):
    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.samples: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0].detach().cpu()
        self.samples += [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images]

    def on_train_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        record = {"samples": self.samples, "weights": weights, "world": trainer.world_size}
        torch.save(record, self.folder / f"node_{trainer.global_rank}.pt")
