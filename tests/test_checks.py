import pytest
import torch
from omegaconf import OmegaConf

from vitlab.checks import (
    UserError,
    check_argument_types,
    check_checkpoint_matches,
    check_model,
    check_output_dir,
    checkpoint_bytes,
    read_checkpoint,
)


def test_number_arguments_given_text_are_refused_with_their_path():
    cfg = OmegaConf.create(
        {"task": {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": "abc"}}}
    )
    with pytest.raises(UserError, match=r"^task.optimizer.lr: expected a number, got 'abc'$"):
        check_argument_types(cfg)


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
        check_argument_types(cfg)


@pytest.mark.parametrize("key", ["seed", "num_threads"])
def test_top_level_integers_given_text_are_refused(key: str):
    with pytest.raises(UserError, match=rf"^{key}: expected an integer, got 'abc'$"):
        check_argument_types(OmegaConf.create({key: "abc"}))


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
    check_argument_types(cfg)
    cfg.model.depth = "two"
    with pytest.raises(UserError, match="model.depth: expected a number"):
        check_argument_types(cfg)


def test_patch_check_names_the_group():
    with pytest.raises(UserError, match="^model: patch size 5x5 does not divide image size 8x8"):
        check_model(OmegaConf.create({"img_size": 8, "patch_size": 5}))


def test_output_dir_without_room_for_checkpoints_is_refused(tmp_path):
    check_output_dir(tmp_path / "run", needed_bytes=1)
    assert not list((tmp_path / "run").iterdir())  # the probe is cleaned up
    with pytest.raises(UserError, match=r"MiB free in .*, checkpoints need about"):
        check_output_dir(tmp_path / "run", needed_bytes=2**62)


def test_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UserError, match=r"^paths.output_dir: cannot write to .*notes.txt/run"):
        check_output_dir(tmp_path / "notes.txt" / "run", needed_bytes=1)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
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


def test_checkpoint_size_counts_weights_and_two_moments():
    assert checkpoint_bytes(torch.nn.Linear(10, 10)) == 3 * 110 * 4


def test_resuming_a_checkpoint_with_another_class_count_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"model": {"num_classes": 10}}}, path)
    check_checkpoint_matches(str(path), 10)
    with pytest.raises(UserError, match="was trained for 10 classes, but the data has 3"):
        check_checkpoint_matches(str(path), 3)
