"""Reading a train.py checkpoint: a clear error for files that are not one, and its run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitlab.checkpoint_file import RUN_CONFIG_KEY, read_checkpoint, stored_config
from vitlab.errors import UserError


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path):
    text, truncated = tmp_path / "notes.ckpt", tmp_path / "cut.ckpt"
    text.write_text("not a checkpoint")
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-2000])
    for path in (text, truncated):
        with pytest.raises(UserError, match=rf"^ckpt_path: {path} is not a"):
            read_checkpoint(path)
    torch.save([1, 2], text)
    with pytest.raises(UserError, match="holds a list, not a checkpoint"):
        read_checkpoint(text)


def test_the_stored_run_config_is_read_back(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    torch.save({RUN_CONFIG_KEY: {"data": {"num_classes": 10}}}, path)
    assert stored_config(read_checkpoint(path), path).data.num_classes == 10


def test_a_checkpoint_without_a_run_config_is_refused(tmp_path: Path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(UserError, match=rf"^ckpt_path: {path} holds no vitlab run config"):
        stored_config(read_checkpoint(path), path)
