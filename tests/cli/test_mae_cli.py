"""MAE pretraining -> fine-tuning / linear probing -> evaluation, through train.py and eval.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

LIMITS = ("debug=limit", "trainer.max_epochs=1")


def newest_run(cli, script: str = "train") -> Path:
    return cli.run_dirs(script)[-1]


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_mae_checkpoint_round_trips_into_fine_tuning_and_linear_probing(cli, tmp_path: Path):
    # the PNG path of the reconstruction grids: a logger that takes no images; task= alone
    # picks the one recipe written for MAE on the default data and model, and says so
    result = cli("train.py", "task=mae_pretrain", "logger=csv", *LIMITS)
    pretrain_dir = newest_run(cli)
    assert "recipe: experiment=digits_mae_pretrain, the one written for" in result.stderr
    overrides = (pretrain_dir / ".hydra" / "overrides.yaml").read_text()
    assert "- experiment=digits_mae_pretrain" in overrides.splitlines()
    pretrained = pretrain_dir / "checkpoints" / "last.ckpt"
    assert {"val/loss", "val/probe_acc1", "test/loss"} <= metrics_of(pretrain_dir).keys()
    assert (pretrain_dir / "reconstructions" / "epoch_000.png").is_file()
    encoder = torch.load(pretrained, weights_only=True)["state_dict"][
        "model.blocks.0.attn.qkv.weight"
    ]

    moved = tmp_path / "mae.ckpt"
    pretrained.rename(moved)  # later runs must read the file given, not the pretrain run
    cli("train.py", "experiment=digits_mae_finetune", f"task.pretrained={moved}", *LIMITS)
    finetune_dir = newest_run(cli)
    assert {"val/acc1", "test/acc1"} <= metrics_of(finetune_dir).keys()

    probe = cli("train.py", "experiment=digits_linear_probe", f"task.pretrained={moved}", *LIMITS)
    probe_dir = newest_run(cli)
    # the frozen encoder is in eval mode by design: Lightning's warning about it is not shown
    assert "in eval mode" not in probe.stderr
    probed = torch.load(probe_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(probed["model.blocks.0.attn.qkv.weight"], encoder)  # frozen encoder
    assert "test/acc1" in metrics_of(probe_dir)

    # evaluation rebuilds the task from the stored config and never reads the pretrained file
    moved.unlink()
    cli("eval.py", f"ckpt_path={finetune_dir / 'checkpoints' / 'last.ckpt'}")
    assert "test/acc1" in metrics_of(newest_run(cli, "eval"))


def test_missing_pretrained_key_fails_with_the_key_names(cli, tmp_path: Path):
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 64)}}, tmp_path / "bad.pth")
    result = cli(
        "train.py",
        "experiment=digits_mae_finetune",
        f"task.pretrained={tmp_path / 'bad.pth'}",
        "debug=fdr",
        check=False,
    )
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert "does not fit the model: missing" in last_line and "blocks.0" in last_line


def test_mae_evaluation_reproduces_the_runs_own_losses(cli):
    """Validation and test masks are seeded: the losses are a function of the weights."""
    cli(
        "train.py",
        "experiment=digits_mae_pretrain",
        "debug=limit",
        "trainer.limit_test_batches=1.0",
    )
    trained = metrics_of(newest_run(cli))
    best = next((newest_run(cli) / "checkpoints").glob("epoch_*.ckpt"))
    cli("eval.py", f"ckpt_path={best}")
    assert metrics_of(newest_run(cli, "eval"))["test/loss"] == trained["test/loss"]
