"""Reading a train.py checkpoint: a clear error for files that are not one, its run config, and
the trained run rebuilt from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitlab.checkpoint_file import RUN_CONFIG_KEY, load_run, read_checkpoint, stored_config
from vitlab.errors import UserError
from vitlab.tasks.classification import ClassificationTask


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


def test_a_checkpoint_in_torchs_older_format_is_read(tmp_path: Path):
    """Weights published before torch 1.6 (timm's first ViT files) are no zip archive."""
    path = tmp_path / "old.pth"
    torch.save({"pos_embed": torch.ones(1, 2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path, "task.pretrained")["pos_embed"], torch.ones(1, 2))


def test_the_stored_run_config_is_read_back(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    torch.save({RUN_CONFIG_KEY: {"data": {"num_classes": 10}}}, path)
    assert stored_config(read_checkpoint(path), path).data.num_classes == 10


def test_a_checkpoint_without_a_run_config_is_refused(tmp_path: Path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(UserError, match=rf"^ckpt_path: {path} holds no vitlab run config"):
        stored_config(read_checkpoint(path), path)


def test_a_run_is_rebuilt_from_its_checkpoint_alone(trained_checkpoint):
    path = trained_checkpoint()
    trained = load_run(path, {"batch_size": 3})
    assert type(trained.task) is ClassificationTask
    stored = torch.load(path, weights_only=True)["state_dict"]
    for name, tensor in trained.task.state_dict().items():
        assert torch.equal(tensor, stored[name]), name
    assert trained.task_name == "vitlab.tasks.classification.ClassificationTask"
    assert trained.data.batch_size == 3 and trained.config.data.batch_size == 3
    assert trained.class_names == [str(digit) for digit in range(10)]
