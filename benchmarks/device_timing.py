"""Timing and peak memory of a step on the CPU or a CUDA device, shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

GIB = 2**30


def is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def seconds_per_step(step: Callable[[], None], steps: int, device: str) -> float:
    """Wall seconds per step over ``steps`` steps, the device's queued work included."""
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def warm_up(step: Callable[[], None], steps: int, device: str) -> float | None:
    """Runs ``steps`` warm-up steps (allocator, kernels, compilation); on CUDA returns the most
    memory they allocated beyond what was allocated before them, in GiB."""
    if not is_cuda(device):
        for _ in range(steps):
            step()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - baseline) / GIB
