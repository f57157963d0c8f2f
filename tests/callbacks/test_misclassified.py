"""The misclassified-images table shows the images: the PNGs W&B stages for its rows are 8-bit
pictures of the digits, not the black squares a [0, 1] float image becomes."""

from __future__ import annotations

import numpy as np
import wandb
from PIL import Image

from vitlab.callbacks.misclassified import MisclassifiedImages
from vitlab.data.digits import DigitsDataModule
from vitlab.loggers import WandbLogger, finish_loggers
from vitlab.tasks.base import build_task


def test_the_misclassified_table_stages_visible_images(
    vit_config, optimizer_config, quiet_trainer, tmp_path, task_recipe
):
    task = build_task({
        "_target_": "vitlab.tasks.classification.ClassificationTask",
        "model": vit_config(),
        "optimizer": optimizer_config(),
        **task_recipe("classification"),
    })  # fmt: skip
    callback = MisclassifiedImages(max_images=4)
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        logger=WandbLogger(offline=True, save_dir=tmp_path, project="vitlab"),
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[callback],
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    finish_loggers()
    wandb.teardown()

    assert len(callback.rows) == 4  # an untrained model gets at least 4 of 16 wrong
    for image, *_ in callback.rows:
        # the file W&B writes for a table cell when the row is logged
        pixels = np.asarray(Image.open(wandb.Image(image)._path))
        assert pixels.shape == (8, 8) and pixels.max() > 1
        assert len(np.unique(pixels)) > 2
