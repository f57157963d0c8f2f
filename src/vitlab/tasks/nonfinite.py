"""Non-finite losses noticed on the device and read on the host only when asked.

``bool(torch.isfinite(loss))`` every step is a device-to-host read: the host waits for the GPU to
finish the step before it may queue the next one. Instead each step folds its verdict into a
device tensor (which call first met a non-finite loss, and that loss), and the host reads it
only when the training loop reads the device anyway (at logging steps, at an epoch's end, before
a checkpoint). Stopping still names the first bad step: the host keeps where each call since the
last read happened, as plain integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Place:
    """Where a training step's loss was computed."""

    global_step: int
    epoch: int
    batch: int

    def __str__(self) -> str:
        return f"global step {self.global_step} (epoch {self.epoch}, batch {self.batch})"


class NonFiniteWatch:
    """``record`` each loss (no host read); ``first_nonfinite`` reads once and tells the first
    non-finite loss since the previous read, with its place, or None."""

    def __init__(self) -> None:
        self.places: list[Place] = []
        self.first: torch.Tensor | None = None  # index into places, -1 while all are finite
        self.value: torch.Tensor | None = None  # the loss at that index

    def record(self, loss: torch.Tensor, place: Place) -> None:
        loss = loss.detach().float()
        if self.first is None or self.first.device != loss.device:
            self.first = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.value = torch.zeros((), device=loss.device)
        new = torch.logical_and(~torch.isfinite(loss), self.first < 0)
        self.first = torch.where(new, len(self.places), self.first)
        self.value = torch.where(new, loss, self.value)
        self.places.append(place)

    def first_nonfinite(self) -> tuple[float, Place] | None:
        if self.first is None or not self.places:
            return None
        index = int(self.first)  # the one host read
        found = (float(self.value), self.places[index]) if index >= 0 else None
        self.places.clear()
        self.first.fill_(-1)
        return found
