"""MAE pretraining task: recipe, online probe isolation and the reconstruction callback."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import torch
from quiet_trainer import quiet_trainer
from tiny_models import tiny_mae

from vitlab.callbacks.reconstruction import ReconstructionGrid, reconstruction_panels
from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.mae import MAEPretrainTask


def mae_task(probe_num_classes: int | None = 10, lr: float = 1e-3) -> MAEPretrainTask:
    model = tiny_mae(mask_ratio=0.5)
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    return MAEPretrainTask(model, optimizer, warmup_epochs=0, probe_num_classes=probe_num_classes)


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return quiet_trainer(
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_pretraining_logs_losses_and_probe_accuracy_and_lowers_the_loss(tmp_path: Path):
    torch.manual_seed(0)
    task = mae_task(lr=1e-2)
    run = trainer(
        tmp_path, max_epochs=3, limit_train_batches=10, limit_val_batches=2, log_every_n_steps=10
    )
    run.validate(task, datamodule=DigitsDataModule(batch_size=32))
    initial = run.callback_metrics["val/loss"].item()
    run.fit(task, datamodule=DigitsDataModule(batch_size=32))
    metrics = run.callback_metrics
    assert {"train/loss", "train/probe_loss", "val/loss", "val/probe_acc1"} <= metrics.keys()
    assert metrics["val/loss"] < initial


def test_optimizer_holds_encoder_decoder_and_probe_with_mae_betas(tmp_path: Path):
    task = mae_task()
    run = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    run.fit(task, datamodule=DigitsDataModule(batch_size=16))
    optimizer = run.optimizers[0]
    names = {name for group in optimizer.param_groups for name in group["names"]}
    trainable = {name for name, p in task.named_parameters() if p.requires_grad}
    assert names == trainable
    assert {"model.mask_token", "model.decoder_pred.weight", "probe.1.weight"} <= names
    decay = {n: g["weight_decay"] for g in optimizer.param_groups for n in g["names"]}
    assert decay["model.mask_token"] == decay["model.cls_token"] == 0.0
    assert decay["model.blocks.0.attn.qkv.weight"] == 0.05
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_probe_loss_never_reaches_the_encoder():
    task = mae_task()
    task.log = lambda *args, **kwargs: None
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    task.training_step((images, labels), 0).backward()
    assert task.probe[1].weight.grad.abs().sum() > 0
    with_probe = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}
    task.zero_grad()
    torch.manual_seed(0)  # the same mask
    loss, _, _ = task.model(images)
    loss.backward()
    for name, param in task.model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(param.grad, with_probe[name], msg=name)


def test_without_labels_no_probe_is_built():
    task = mae_task(probe_num_classes=None)
    assert task.probe is None
    assert not any(name.startswith("probe") for name, _ in task.named_parameters())


def test_reconstruction_panels_paste_predictions_only_into_masked_patches():
    task = mae_task()
    images = torch.randn(3, 1, 8, 8)
    torch.manual_seed(0)
    _, _, mask = task.model(images)
    torch.manual_seed(0)
    panels = reconstruction_panels(task.model, images)
    assert panels.shape == (12, 1, 8, 8)
    original, masked, _, pasted = panels.view(3, 4, 1, 8, 8).unbind(1)
    assert torch.equal(original, images)
    visible = (1 - task.model.unpatchify(mask[..., None].expand(-1, -1, 4))).bool()
    assert torch.equal(masked[visible], images[visible])
    assert torch.equal(pasted[visible], images[visible])
    assert not torch.equal(pasted[~visible], images[~visible])


def test_reconstruction_grid_is_saved_as_png_without_wandb(tmp_path: Path):
    run = trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[ReconstructionGrid(num_images=4)],
    )
    run.fit(mae_task(), datamodule=DigitsDataModule(batch_size=8))
    pngs = sorted(p.name for p in (tmp_path / "reconstructions").iterdir())
    assert pngs == ["epoch_000.png", "epoch_001.png"]
