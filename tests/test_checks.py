"""Checks of a composed run config and what it built, each a one-line ``UserError``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vitlab.checkpoint_file import RUN_CONFIG_KEY
from vitlab.checks import (
    check_arguments,
    check_checkpoint_matches,
    check_model,
    check_monitor,
    check_output_dir,
    check_split_sizes,
    checkpoint_bytes,
)
from vitlab.errors import UserError

CLASSIFIER = "vitlab.tasks.classification.ClassificationTask"


def test_number_arguments_given_text_are_refused_with_their_path():
    cfg = OmegaConf.create(
        {"task": {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": "abc"}}}
    )
    with pytest.raises(UserError, match=r"^task.optimizer.lr: expected a number, got 'abc'$"):
        check_arguments(cfg)


def test_a_value_given_through_an_interpolation_is_named_where_it_was_given():
    cfg = OmegaConf.create(
        {
            "seed": 1,
            "model": {"img_size": "abc"},
            "data": {
                "_target_": "vitlab.data.digits.DigitsDataModule",
                "img_size": "${model.img_size}",
            },
        }
    )
    with pytest.raises(UserError, match=r"^model.img_size: expected a number, got 'abc'$"):
        check_arguments(cfg)


@pytest.mark.parametrize("key", ["seed", "num_threads"])
def test_top_level_integers_given_text_are_refused(key: str):
    with pytest.raises(UserError, match=rf"^{key}: expected an integer, got 'abc'$"):
        check_arguments(OmegaConf.create({key: "abc"}))


def test_well_typed_config_passes_and_strings_for_string_arguments_are_fine():
    cfg = OmegaConf.create(
        {
            "model": {
                "_target_": "vitlab.models.vit.VisionTransformer",
                "depth": 2,
                "global_pool": "avg",
            },
            "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3},
        }
    )
    check_arguments(cfg)
    cfg.model.depth = "two"
    with pytest.raises(UserError, match="model.depth: expected a number"):
        check_arguments(cfg)


def test_arguments_a_target_does_not_take_are_refused_with_close_names():
    cfg = OmegaConf.create(
        {"trainer": {"_target_": "lightning.pytorch.trainer.Trainer", "max_epoch": 3}}
    )
    with pytest.raises(
        UserError,
        match=r"^trainer.max_epoch: Trainer takes no argument 'max_epoch'; did you mean max_epochs",
    ):
        check_arguments(cfg)


def test_keyword_arguments_passed_on_to_base_classes_are_known():
    data = {"_target_": "vitlab.data.imagefolder.ImageFolderDataModule", "root": "x", "img_size": 8}
    check_arguments(OmegaConf.create({"data": data | {"batch_size": 4, "mix": None}}))
    with pytest.raises(UserError, match=r"^data.batchsize: ImageFolderDataModule takes no"):
        check_arguments(OmegaConf.create({"data": data | {"batchsize": 4}}))


def test_patch_check_names_the_group():
    with pytest.raises(UserError, match="^model: patch size 5x5 does not divide image size 8x8"):
        check_model(OmegaConf.create({"img_size": 8, "patch_size": 5}))


def test_an_unknown_position_encoding_is_refused_with_the_choices():
    with pytest.raises(
        UserError,
        match=r"^model.pos_embed: expected one of learned, sincos, relative, conditional, rope; "
        r"got 'alibi'$",
    ):
        check_model(OmegaConf.create({"img_size": 8, "patch_size": 2, "pos_embed": "alibi"}))


def test_output_dir_without_room_for_checkpoints_is_refused(tmp_path: Path):
    checkpoints = tmp_path / "run" / "checkpoints"
    check_output_dir(tmp_path / "run", [checkpoints], needed_bytes=1)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["checkpoints"]  # probes cleaned up
    assert not list(checkpoints.iterdir())
    with pytest.raises(UserError, match=r"MiB free in .*, checkpoints need about"):
        check_output_dir(tmp_path / "run", [checkpoints], needed_bytes=2**62)


def test_output_dir_under_a_file_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UserError, match=r"^paths.output_dir: cannot write to .*notes.txt/run"):
        check_output_dir(tmp_path / "notes.txt" / "run", [], needed_bytes=1)


def test_a_checkpoint_folder_under_a_file_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UserError, match=r"^paths.output_dir: cannot write to .*notes.txt/ckpts"):
        check_output_dir(tmp_path / "run", [tmp_path / "notes.txt" / "ckpts"], needed_bytes=1)


def test_checkpoint_size_counts_weights_and_two_moments():
    assert checkpoint_bytes(torch.nn.Linear(10, 10)) == 3 * 110 * 4


def test_resuming_a_checkpoint_with_another_class_count_is_refused(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    torch.save({RUN_CONFIG_KEY: {"data": {"num_classes": 10}}}, path)
    check_checkpoint_matches(str(path), CLASSIFIER, 10)
    with pytest.raises(UserError, match="was trained for 10 classes, but the data has 3"):
        check_checkpoint_matches(str(path), CLASSIFIER, 3)


def test_a_checkpoint_without_a_run_config_is_not_refused(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}}, path)
    check_checkpoint_matches(str(path), CLASSIFIER, 3)


def test_the_monitored_metric_must_be_one_the_task_logs():
    check_monitor("val/acc1", ["val/loss", "val/acc1"])
    with pytest.raises(
        UserError,
        match=r"^task.monitor: the run logs no 'val/miou' at every validation; .*val/acc1",
    ):
        check_monitor("val/miou", ["val/loss", "val/acc1"])


def test_each_process_needs_a_full_train_batch_and_every_split_used_an_image():
    sizes = {"train": 100, "val": 10, "test": 0}
    check_split_sizes(sizes, batch_size=50, world_size=2, needed=("val",))
    with pytest.raises(UserError, match=r"^data: the test split is empty$"):
        check_split_sizes(sizes, batch_size=50, world_size=2, needed=("val", "test"))
    with pytest.raises(
        UserError,
        match=r"^data.batch_size: the train split has 100 images \(34 for each of 3 processes\), "
        r"fewer than one batch of 50 .* set data.batch_size=34 or less$",
    ):
        check_split_sizes(sizes, batch_size=50, world_size=3, needed=())
