"""What a run's directory keeps when the run ends early: a refused run (the user's mistake,
before any work) leaves none, a crashed one keeps what it wrote and the log names it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import DictConfig

from vitlab import run
from vitlab.errors import UserError


def started_run_dir(cfg: DictConfig) -> Path:
    """The run directory as Hydra leaves it on starting a job."""
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("{}\n")
    (run_dir / "train.log").write_text("")
    return run_dir


@pytest.mark.parametrize("made", [(), ("checkpoints",)])
def test_a_refused_run_leaves_no_run_directory(compose_config, made):
    cfg = compose_config()
    run_dir = started_run_dir(cfg)

    def refuse(_: DictConfig) -> dict[str, float]:
        # e.g. pretrained weights that fail to load as fitting starts: the trainer has made
        # its (empty) checkpoint folder
        for folder in made:
            (run_dir / folder).mkdir()
        raise UserError("task.pretrained: timm:vit_t: not in the Hugging Face cache")

    with pytest.raises(SystemExit) as exit:
        run.main(refuse, cfg)
    assert exit.value.code == 2
    assert not run_dir.exists()


def test_a_crashed_run_keeps_its_directory_and_names_it(compose_config, caplog):
    cfg = compose_config()
    run_dir = started_run_dir(cfg)

    def crash(_: DictConfig) -> dict[str, float]:
        (run_dir / "checkpoints").mkdir()
        raise RuntimeError("out of memory")

    with caplog.at_level(logging.ERROR, logger="vitlab.run"), pytest.raises(RuntimeError):
        run.main(crash, cfg)
    assert (run_dir / "checkpoints").is_dir() and (run_dir / ".hydra").is_dir()
    assert f"the run failed; its directory keeps what it wrote: {run_dir}" in caplog.messages


def test_a_refusal_after_work_began_keeps_the_run_directory(compose_config):
    cfg = compose_config()
    run_dir = started_run_dir(cfg)

    def refuse_late(_: DictConfig) -> dict[str, float]:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
        raise UserError("val/acc1: not logged")

    with pytest.raises(SystemExit):
        run.main(refuse_late, cfg)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
