"""Timing and peak memory of a step on the CPU or a CUDA device, shared by the benchmarks."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

GIB = 2**30


def at_least_one(value: str) -> int:
    """An argparse ``type``: an integer of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def add_timing_arguments(
    parser: argparse.ArgumentParser, batch_size: int, steps: int = 3, warmup: int = 1
) -> None:
    """``--batch-size``, ``--steps``, ``--warmup`` (at least 1: the warm-up steps measure peak
    memory) and ``--device`` (CUDA when there is one), with these defaults."""
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument(
        "--steps", type=int, default=steps, help="timed steps (per round, where there are rounds)"
    )
    parser.add_argument(
        "--warmup",
        type=at_least_one,
        default=warmup,
        help="untimed steps of each model first (at least 1: they measure peak memory)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


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
