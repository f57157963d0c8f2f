"""A command that needs an extra that is not installed stops with one line naming the
``pip install 'vitlab[...]'`` to run, exit code 2. The extra's modules are made to fail to import
(``sys.modules[name] = None``: Python's import raises ``ImportError`` for them) and the real
command runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vitlab import export, run
from vitlab.cli import train
from vitlab.data import pack
from vitlab.errors import UserError
from vitlab.extras import EXTRAS


def without(monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    for module in EXTRAS[extra]:
        monkeypatch.setitem(sys.modules, module, None)


def exits_with_one_line(capsys: pytest.CaptureFixture, command, expected: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_onnx_export_names_the_onnx_extra(monkeypatch, capsys, tmp_path: Path):
    without(monkeypatch, "onnx")
    arguments = [str(tmp_path / "best.ckpt"), str(tmp_path / "out"), "--onnx"]
    expected = "error: --onnx: needs onnx: pip install 'vitlab[onnx]'"
    exits_with_one_line(capsys, lambda: export.main(arguments), expected)
    assert not (tmp_path / "out").exists()  # nothing done


@pytest.mark.parametrize(
    ("extra", "arguments", "expected"),
    [
        ("sweep", ["hparams_search=vit_optuna"], "hparams_search: needs hydra_optuna_sweeper"),
        ("slurm", ["-m", "hydra/launcher=slurm"], "hydra/launcher: needs hydra_submitit_launcher"),
        ("joblib", ["-m", "hydra/launcher=joblib"], "hydra/launcher: needs hydra_joblib_launcher"),
    ],
)
def test_hydra_plugin_options_name_their_extra(
    extra: str, arguments: list[str], expected: str, monkeypatch, capsys
):
    without(monkeypatch, extra)
    monkeypatch.setattr(sys, "argv", ["vitlab-train", *arguments])
    exits_with_one_line(capsys, train.main, f"error: {expected}: pip install 'vitlab[{extra}]'")


def test_tensorboard_logger_names_the_tensorboard_extra(monkeypatch, compose_config):
    without(monkeypatch, "tensorboard")
    cfg = compose_config("logger=tensorboard")
    with pytest.raises(UserError) as error:
        run.check_config(cfg)
    assert str(error.value) == (
        "logger.tensorboard: needs tensorboard: pip install 'vitlab[tensorboard]'"
    )


def test_shard_data_names_the_shards_extra(monkeypatch, compose_config, tmp_path: Path):
    without(monkeypatch, "shards")
    cfg = compose_config("data=imagenet_shards", f"data.root={tmp_path}")
    with pytest.raises(UserError) as error:
        run.build_run(cfg, None)
    assert str(error.value) == "data: needs litdata: pip install 'vitlab[shards]'"


def test_shard_packing_names_the_shards_extra(monkeypatch, capsys, image_tree, tmp_path: Path):
    without(monkeypatch, "shards")
    arguments = [str(image_tree()), str(tmp_path / "shards"), "--format", "shards"]
    expected = "error: --format shards: needs litdata: pip install 'vitlab[shards]'"
    exits_with_one_line(capsys, lambda: pack.main(arguments), expected)
    assert not (tmp_path / "shards").exists()
