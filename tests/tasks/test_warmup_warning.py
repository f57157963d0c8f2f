"""A run too short to leave its warmup says so, in one warning line."""

from __future__ import annotations

import logging

import pytest

from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.base import build_task


@pytest.mark.parametrize(("warmup_epochs", "warned"), [(2, True), (0.5, False)])
def test_a_run_that_is_all_warmup_says_so(
    warmup_epochs,
    warned,
    vit_config,
    optimizer_config,
    task_recipe,
    quiet_trainer,
    caplog,
    monkeypatch,
):
    # an in-process Hydra run of another test may have stopped vitlab's loggers propagating
    monkeypatch.setattr(logging.getLogger("vitlab"), "propagate", True)
    task = build_task({
        "_target_": "vitlab.tasks.classification.ClassificationTask",
        "model": vit_config(),
        "optimizer": optimizer_config(),
        **task_recipe("classification", warmup_epochs=warmup_epochs),
    })  # fmt: skip
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    with caplog.at_level(logging.WARNING, logger="vitlab"):
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    warnings = [r.getMessage() for r in caplog.records if "is warmup" in r.getMessage()]
    expected = [
        "every step of this run is warmup (2 steps, task.warmup_epochs=2): the lr never "
        "reaches its peak 6.25e-05 nor decays; train longer or lower task.warmup_epochs"
    ]
    assert warnings == (expected if warned else [])
