"""A process killed while writing a checkpoint leaves the previous one intact and loadable.

Checkpoints go through Lightning's checkpoint IO, which serialises to memory and writes the
file through a filesystem transaction (a temporary file renamed into place).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

WRITER = """
import sys, torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
io, path = TorchCheckpointIO(), sys.argv[1]
step = 0
while True:
    step += 1
    io.save_checkpoint({"step": step, "weights": torch.full((64, 2**20), float(step))}, path)
    print(step, flush=True)
"""


def test_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.ckpt"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(2):  # two complete saves, then kill somewhere inside the following ones
            assert writer.stdout.readline().strip()
        time.sleep(0.15)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=60)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["step"] >= 2
    assert torch.all(checkpoint["weights"] == checkpoint["step"])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert all(not name.endswith(".ckpt") for name in leftovers)
