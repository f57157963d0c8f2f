"""MAE pretraining task: recipe, online probe isolation, seeded evaluation masks, the encoder
the model group describes, and the reconstruction callback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch

from vitlab.callbacks.reconstruction import ReconstructionGrid, reconstruction_panels
from vitlab.data.digits import DigitsDataModule
from vitlab.tasks.mae import MAEPretrainTask


@pytest.fixture
def mae_task(mae_config, optimizer_config, task_recipe) -> Callable[..., MAEPretrainTask]:
    """``mae_task(probe_num_classes=10, lr=1e-3, encoder=None)``: a tiny MAE task, half masked,
    with the MAE recipe's AdamW."""

    def build(
        probe_num_classes: int | None = 10, lr: float = 1e-3, encoder: dict | None = None
    ) -> MAEPretrainTask:
        optimizer = optimizer_config(lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
        return MAEPretrainTask(
            mae_config(encoder, mask_ratio=0.5),
            optimizer,
            **task_recipe("mae_pretrain", warmup_epochs=0, probe_num_classes=probe_num_classes),
        )

    return build


@pytest.fixture
def trainer(tmp_path: Path, quiet_trainer) -> Callable[..., L.Trainer]:
    """``trainer(**kwargs)``: a quiet Trainer whose files go to tmp_path."""
    return lambda **kwargs: quiet_trainer(default_root_dir=tmp_path, **kwargs)


def test_pretraining_logs_losses_and_probe_accuracy_and_lowers_the_loss(mae_task, trainer):
    torch.manual_seed(0)
    task = mae_task(lr=1e-2)
    run = trainer(max_epochs=3, limit_train_batches=10, limit_val_batches=2, log_every_n_steps=10)
    run.validate(task, datamodule=DigitsDataModule(batch_size=32))
    initial = run.callback_metrics["val/loss"].item()
    run.fit(task, datamodule=DigitsDataModule(batch_size=32))
    metrics = run.callback_metrics
    assert {"train/loss", "train/probe_loss", "val/loss", "val/probe_acc1"} <= metrics.keys()
    assert metrics["val/loss"] < initial


def test_optimizer_holds_encoder_decoder_and_probe_with_mae_betas(mae_task, trainer):
    task = mae_task()
    run = trainer(max_steps=1, limit_val_batches=0)
    run.fit(task, datamodule=DigitsDataModule(batch_size=16))
    optimizer = run.optimizers[0]
    names = {name for group in optimizer.param_groups for name in group["names"]}
    trainable = {name for name, p in task.named_parameters() if p.requires_grad}
    assert names == trainable
    assert {"model.mask_token", "model.decoder_pred.weight", "probe.1.weight"} <= names
    decay = {n: g["weight_decay"] for g in optimizer.param_groups for n in g["names"]}
    # the release decays the tokens too (tests/models/test_mae.py compares with its groups)
    assert decay["model.mask_token"] == decay["model.cls_token"] == 0.05
    assert decay["model.blocks.0.attn.qkv.weight"] == 0.05
    assert decay["model.blocks.0.attn.qkv.bias"] == decay["model.norm.weight"] == 0.0
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_probe_loss_never_reaches_the_encoder(mae_task):
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


def test_without_labels_no_probe_is_built(mae_task):
    task = mae_task(probe_num_classes=None)
    assert task.probe is None
    assert not any(name.startswith("probe") for name, _ in task.named_parameters())


def test_reconstruction_panels_paste_predictions_only_into_masked_patches(mae_task):
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


def test_reconstruction_grid_is_saved_as_png_without_wandb(tmp_path: Path, mae_task, trainer):
    run = trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[ReconstructionGrid(num_images=4)],
    )
    run.fit(mae_task(), datamodule=DigitsDataModule(batch_size=8))
    pngs = sorted(p.name for p in (tmp_path / "reconstructions").iterdir())
    assert pngs == ["epoch_000.png", "epoch_001.png"]


def test_validation_and_test_losses_repeat_whatever_the_global_rng(mae_task, trainer):
    task, data = mae_task(), DigitsDataModule(batch_size=32)
    run = trainer(limit_val_batches=3, limit_test_batches=3)
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # the global RNG differs: the masks must not
        (validated,) = run.validate(task, datamodule=data, verbose=False)
        (tested,) = run.test(task, datamodule=data, verbose=False)
        losses.append((validated["val/loss"], tested["test/loss"]))
    assert losses[0] == losses[1]


def test_evaluation_masks_are_seeded_by_the_batch_index(mae_task):
    task = mae_task()
    images = torch.randn(4, 1, 8, 8)

    def mask(batch_idx: int) -> torch.Tensor:
        return task.model.forward_encoder(images, 0.5, task.eval_masks(images, batch_idx))[1]

    assert torch.equal(mask(0), mask(0))
    assert not torch.equal(mask(0), mask(1))


def test_training_masks_differ_from_step_to_step(mae_task):
    task = mae_task(probe_num_classes=None)
    task.log = lambda *args, **kwargs: None
    batch = (torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    torch.manual_seed(0)
    # the same batch, index and weights: only the masks can make the losses differ
    losses = [task.training_step(batch, 0).item() for _ in range(3)]
    assert len(set(losses)) == 3


def test_the_encoder_keeps_the_model_groups_position_embeddings_and_drop_path(mae_task, vit_config):
    task = mae_task(encoder=vit_config(pos_embed="learned", drop_path_rate=0.3))
    trainable = {name for name, p in task.named_parameters() if p.requires_grad}
    assert "model.pos_embed" in trainable
    assert task.model.blocks[-1].drop_path.p == pytest.approx(0.3)
    fixed = mae_task(encoder=vit_config(pos_embed="sincos"))
    assert not fixed.model.pos_embed.requires_grad
    assert all(block.drop_path.p == 0 for block in fixed.model.blocks)
