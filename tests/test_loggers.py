"""vitlab's W&B logger on real offline runs read back from disk, and W&B's credentials check."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb

import vitlab.loggers
from tests.helpers.cli import CLI
from tests.helpers.wandb_records import run_contents
from vitlab.callbacks.misclassified import MisclassifiedImages
from vitlab.data.digits import DigitsDataModule
from vitlab.errors import UserError
from vitlab.loggers import (
    WandbLogger,
    finish_loggers,
    history_rows,
    logged_metric_names,
)
from vitlab.run import check_config
from vitlab.tasks.classification import ClassificationTask
from vitlab.weights import check_wandb_source

CHECK_CREDENTIALS = "from vitlab.loggers import wandb_credentials_found as f; print(f())"


@pytest.fixture
def offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """W&B as a new user has it (no WANDB_* variables, a home of its own); the run finished."""
    for name in [name for name in os.environ if name.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield
    finish_wandb()


def finish_wandb() -> None:
    """Finish the W&B run and wait for its files: ``wandb.finish`` returns before wandb-core
    has written them, ``wandb.teardown`` stops wandb-core."""
    finish_loggers()
    wandb.teardown()


def run_files(save_dir: Path) -> list[Path]:
    """The run's segments, oldest first."""
    return sorted(save_dir.glob("wandb/offline-run-*/run-*.wandb"))


def check_credentials(capfd, home: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -c`` ``wandb_credentials_found()`` with this home and these variables (and no
    other W&B variable), W&B's state as in a fresh process."""
    cli = CLI(home.parent, home, capfd)
    cli.env |= env
    return cli("-c", CHECK_CREDENTIALS)


def test_credentials_for_a_self_hosted_server_are_found_without_going_online(capfd, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1:9\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    # nothing listens on port 9: a check that went online would fail (and log, in ~/.cache)
    result = check_credentials(capfd, home, WANDB_BASE_URL="http://127.0.0.1:9")
    assert (result.returncode, result.stdout, result.stderr) == (0, "True\n", "")
    assert [path for path in home.rglob("*")] == [netrc]


def test_an_empty_home_has_no_credentials_and_stays_empty(capfd, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    result = check_credentials(capfd, home)
    assert (result.returncode, result.stdout, result.stderr) == (0, "False\n", "")
    assert not any(home.iterdir())


def metric_names(row: dict) -> set[str]:
    return {name for name in row if not name.startswith("_") and name != "trainer/global_step"}


def test_a_resumed_segment_logs_only_what_the_earlier_segments_lack(offline_wandb, tmp_path):
    def segment(rows: list[tuple[int, dict[str, float]]]) -> None:
        logger = WandbLogger(offline=True, save_dir=tmp_path, project="vitlab", id="resumed")
        for step, metrics in rows:
            logger.log_metrics(metrics, step=step)
        finish_wandb()

    def train(steps: range) -> list[tuple[int, dict[str, float]]]:
        return [(step, {"train/loss": 1 / (step + 1), "epoch": step // 4}) for step in steps]

    # interrupted after step 5 (an epoch of 4 steps, checkpoint at step 3), resumed from step 3
    segment([*train(range(4)), (3, {"val/loss": 0.5, "epoch": 0}), *train(range(4, 6))])
    segment([*train(range(4, 8)), (7, {"val/loss": 0.4, "epoch": 1}), (7, {"test/loss": 0.3})])

    first, resumed = (run_contents(path) for path in run_files(tmp_path))
    assert first["id"] == resumed["id"] == "resumed"
    assert [(row["trainer/global_step"], metric_names(row)) for row in resumed["history"]] == [
        (6, {"train/loss", "epoch"}),
        (7, {"train/loss", "epoch"}),
        (7, {"val/loss", "epoch"}),
        (7, {"test/loss"}),
    ]
    # as W&B names a segment started in the same second as the one before it
    resumed_dir = run_files(tmp_path)[1].parent
    resumed_dir.rename(f"{run_files(tmp_path)[0].parent}-1")
    assert logged_metric_names(tmp_path / "wandb", "resumed")[7] == {
        "trainer/global_step", "train/loss", "val/loss", "test/loss", "epoch",
        "_step", "_runtime", "_timestamp",
    }  # fmt: skip


def test_a_changed_wandb_record_format_resumes_with_one_warning(
    offline_wandb, tmp_path, monkeypatch, caplog
):
    logger = WandbLogger(offline=True, save_dir=tmp_path, project="vitlab", id="changed")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    finish_wandb()
    assert logged_metric_names(tmp_path / "wandb", "changed")[0] >= {"train/loss"}

    # a W&B release without the record class vitlab reads run files with (compat.wandb_record)
    def moved(data: bytes) -> None:
        raise AttributeError("module 'wandb.proto.wandb_internal_pb2' has no attribute 'Record'")

    monkeypatch.setattr(vitlab.loggers, "wandb_record", moved)
    resumed = WandbLogger(offline=True, save_dir=tmp_path, project="vitlab", id="changed")
    resumed.log_metrics({"train/loss": 0.5}, step=0)  # logged again, not lost
    finish_wandb()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "run file records changed" in warning and wandb.__version__ in warning


def test_a_run_file_cut_anywhere_reads_as_the_rows_before_the_cut(offline_wandb, tmp_path):
    logger = WandbLogger(offline=True, save_dir=tmp_path / "run", project="vitlab", id="cut")
    for step in range(40):
        logger.log_metrics({"train/loss": 1 / (step + 1), "note": "x" * step * 40}, step=step)
    finish_wandb()
    (run_file,) = run_files(tmp_path / "run")
    data = run_file.read_bytes()
    assert len(data) > 32768  # rows split across LevelDB blocks
    full = list(history_rows(run_file))
    assert [int(row["trainer/global_step"]) for row in full] == list(range(40))
    cut = tmp_path / "cut.wandb"
    read = []
    for length in range(0, len(data) + 1, 61):
        cut.write_bytes(data[:length])
        rows = list(history_rows(cut))
        assert rows == full[: len(rows)]
        read.append(len(rows))
    assert read == sorted(read) and 0 < read[len(read) // 2] < len(full)


def test_the_monitored_metric_is_summarised_by_its_best_with_gradients_and_mistakes_logged(
    offline_wandb, tmp_path, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    logger = WandbLogger(
        offline=True,
        save_dir=tmp_path,
        project="vitlab",
        monitor="val/acc1",
        mode="max",
        watch="gradients",
        watch_log_freq=1,
    )
    trainer = quiet_trainer(
        logger=logger,
        callbacks=[MisclassifiedImages(max_images=4)],
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=2,
        log_every_n_steps=1,
    )
    task = ClassificationTask(
        vit_config(), optimizer_config(lr=1e-2), **task_recipe("classification")
    )
    logger.watch_model(task.model)
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=8))
    finish_wandb()
    (run_file,) = run_files(tmp_path)
    run = run_contents(run_file)
    accuracies = [row["val/acc1"] for row in run["history"] if "val/acc1" in row]
    assert len(accuracies) == 3
    assert run["summary"]["val/acc1"] == {"max": max(accuracies)}
    assert any(name.startswith("gradients/blocks.0.attn.qkv") for r in run["history"] for name in r)
    (table_file,) = run_file.parent.glob("files/media/table/val/misclassified_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["image", "target", "predicted", "confidence"]
    assert 0 < len(table["data"]) <= 4
    assert all(target != predicted for _, target, predicted, _ in table["data"])
    # the images travel in the table's artifact (staged for upload while offline)
    (artifact,) = run["artifacts"]
    images = [
        Path(local) for path, local in artifact["files"].items() if path.startswith("media/images/")
    ]
    assert len(images) == len(table["data"])
    assert all(image.read_bytes().startswith(b"\x89PNG") for image in images)


@pytest.mark.parametrize(
    "source", ["wandb:model-1a2b3c4d:best", "wandb:me/vitlab/model-1a2b3c4d", "wandb:me//model:v3"]
)
def test_a_malformed_wandb_artifact_name_shows_the_form(source: str):
    with pytest.raises(UserError) as error:
        check_wandb_source(source, "task.pretrained")
    assert str(error.value) == (
        f"task.pretrained: {source}: expected wandb:<entity>/<project>/<artifact>:<alias or "
        "version>, e.g. wandb:me/vitlab/model-1a2b3c4d:best"
    )


def test_a_wandb_artifact_offline_says_why_it_cannot_be_downloaded(monkeypatch, compose_config):
    monkeypatch.setenv("WANDB_MODE", "offline")
    source = "wandb:me/vitlab/model-1a2b3c4d:best"
    cfg = compose_config("experiment=digits_mae_finetune", f"task.pretrained={source}")
    with pytest.raises(UserError) as error:
        check_config(cfg)
    assert str(error.value) == (
        f"task.pretrained: {source}: downloading a W&B artifact needs W&B online: no "
        "credentials found (wandb login, or WANDB_API_KEY), or WANDB_MODE is offline"
    )
