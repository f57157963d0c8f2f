from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import mae_release
from vitlab.data.digits import DigitsDataModule
from vitlab.optim import WarmupCosine
from vitlab.tasks.classification import ClassificationTask


class RecordLr(L.Callback):
    def __init__(self):
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])


@pytest.fixture
def digits_task(vit_config, optimizer_config, task_recipe) -> Callable[..., ClassificationTask]:
    """``digits_task(lr=1e-3, **task_kwargs)``: a small digits classifier, AdamW with decay."""

    def build(lr: float = 1e-3, **kwargs) -> ClassificationTask:
        model = vit_config(patch_size=4, embed_dim=16, num_heads=2)
        optimizer = optimizer_config(lr=lr, weight_decay=0.05)
        return ClassificationTask(model, optimizer, **task_recipe("classification", **kwargs))

    return build


@pytest.fixture
def fit(quiet_trainer) -> Callable[..., tuple[L.Trainer, RecordLr]]:
    """``fit(task, batch_size=32, **trainer_kwargs)``: fits on the digits, recording the lrs."""

    def run(
        task: ClassificationTask, batch_size: int = 32, **trainer_kwargs
    ) -> tuple[L.Trainer, RecordLr]:
        record = RecordLr()
        trainer = quiet_trainer(callbacks=[record], limit_val_batches=1, **trainer_kwargs)
        trainer.fit(task, datamodule=DigitsDataModule(batch_size=batch_size))
        return trainer, record

    return run


def test_optimizer_groups_scaled_lr_and_per_step_schedule(digits_task, fit):
    task = digits_task(warmup_epochs=1, min_lr=1e-5, layer_decay=0.5)
    trainer, record = fit(
        task, batch_size=32, max_epochs=2, limit_train_batches=4, accumulate_grad_batches=2
    )
    optimizer = trainer.optimizers[0]
    peak = 1e-3 * 32 * 2 / 256  # batch 32 x 2 accumulation steps
    # 4 batches an epoch / 2 accumulation = 2 optimizer steps an epoch: the release's lr at each
    # step's fractional epoch, times each group's layer-decay scale (util/lr_sched.py)
    lrs = [mae_release.adjust_learning_rate(step / 2, peak, 1e-5, 1, 2) for step in range(4)]
    scales = [group["lr_scale"] for group in optimizer.param_groups]
    expected = [[lrs[batch // 2] * scale for scale in scales] for batch in range(8)]
    assert record.lrs == [pytest.approx(row) for row in expected]
    decays = {
        name: group["weight_decay"] for group in optimizer.param_groups for name in group["names"]
    }
    assert decays["blocks.0.attn.qkv.weight"] == 0.05
    assert decays["cls_token"] == decays["blocks.0.norm1.bias"] == 0.0


def test_a_per_epoch_schedule_follows_timms_cosine_scheduler_from_the_warmup_lr(digits_task, fit):
    task = digits_task(
        warmup_epochs=2, warmup_lr=1e-6, min_lr=1e-5, schedule_interval="epoch", layer_decay=0.5
    )
    trainer, record = fit(task, max_epochs=6, limit_train_batches=3)
    peak = 1e-3 * 32 / 256
    # as DeiT's main.py builds it (create_scheduler); each epoch at its own value, as timm's
    # train.py steps it (DeiT's main.py lags one epoch: RecipeTask.lr_schedule)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    timm_schedule = CosineLRScheduler(
        reference, t_initial=6, lr_min=1e-5, warmup_t=2, warmup_lr_init=1e-6
    )
    scales = [group["lr_scale"] for group in trainer.optimizers[0].param_groups]
    for epoch in range(6):
        timm_schedule.step(epoch)
        lr = reference.param_groups[0]["lr"]
        for batch in range(3):
            assert record.lrs[3 * epoch + batch] == pytest.approx([lr * s for s in scales])


def test_an_unknown_schedule_interval_is_refused(digits_task):
    with pytest.raises(ValueError, match="schedule_interval must be 'step' or 'epoch'"):
        digits_task(schedule_interval="iteration")


@pytest.mark.parametrize("max_epochs", [100, -1])
def test_warmup_epochs_count_epochs_when_max_steps_caps_the_run(max_epochs: int, digits_task, fit):
    task = digits_task(warmup_epochs=2, min_lr=0.0)
    _, record = fit(task, max_epochs=max_epochs, max_steps=12, limit_train_batches=4)
    peak = 1e-3 * 32 / 256
    schedule = WarmupCosine(8, 12, min_ratio=0.0)  # 2 epochs of 4 steps warm up, of 12 steps
    assert [lrs[0] for lrs in record.lrs] == pytest.approx([peak * schedule(s) for s in range(12)])


class RecordHits(L.Callback):
    """Top-1 hits of each training batch under the weights its step starts from."""

    def __init__(self):
        self.hits: list[list[torch.Tensor]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.hits.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        images, targets = batch
        with torch.no_grad():
            self.hits[-1].append(pl_module(images).argmax(dim=-1) == targets)


def test_train_accuracy_is_the_top1_of_the_epochs_batches(digits_task, quiet_trainer):
    torch.manual_seed(0)  # weights and shuffles for which the two epochs score differently
    task = digits_task(lr=2e-2, warmup_epochs=0)
    record = RecordHits()
    trainer = quiet_trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[record]
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=32))
    last_epoch = torch.cat(record.hits[-1]).float().mean()
    assert trainer.callback_metrics["train/acc1"].item() == pytest.approx(last_epoch.item())
    assert torch.cat(record.hits[0]).float().mean() != pytest.approx(last_epoch.item())


class HeadAtFitStart(L.Callback):
    """The classifier's weights when fitting starts (after ``setup`` loaded the encoder)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        head = pl_module.model.head
        self.weight, self.bias = head.weight.detach().clone(), head.bias.detach().clone()


def test_fine_tuning_starts_the_classifier_as_the_mae_release_does(
    tmp_path, tiny_mae, vit_config, optimizer_config, quiet_trainer, task_recipe
):
    """``main_finetune.py`` loads the encoder, then ``trunc_normal_(head.weight, std=2e-5)``."""
    torch.save({"model": tiny_mae().state_dict()}, tmp_path / "mae.pth")
    task = ClassificationTask(
        vit_config(global_pool="avg"),
        optimizer_config(),
        **task_recipe("classification", pretrained=str(tmp_path / "mae.pth")),
    )
    record = HeadAtFitStart()
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[record])
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=16))
    assert record.weight.std() == pytest.approx(2e-5, rel=0.2)  # timm's 0.02 from scratch
    assert torch.count_nonzero(record.bias) == 0


def test_soft_targets_use_soft_cross_entropy(digits_task):
    task = digits_task(label_smoothing=0.0)
    images = torch.randn(4, 1, 8, 8)
    soft = torch.softmax(torch.randn(4, 10), dim=1)
    expected = F.cross_entropy(task(images), soft)
    task.log = lambda *args, **kwargs: None
    torch.testing.assert_close(task.training_step((images, soft), 0), expected)


class OneNanBatch(L.LightningDataModule):
    """16 random digits-sized images, one of them NaN: under 2-process DDP with batches of 4,
    one rank meets it in one of its 2 steps."""

    batch_size = 4

    def train_dataloader(self) -> DataLoader:
        images = torch.randn(16, 1, 8, 8)
        images[5] = float("nan")
        labels = torch.zeros(16, dtype=torch.long)
        return DataLoader(TensorDataset(images, labels), batch_size=self.batch_size)


def test_under_ddp_a_nonfinite_batch_is_skipped_and_the_ranks_step_on(
    tmp_path, digits_task, quiet_trainer
):
    task = digits_task(warmup_epochs=0)
    task.skip_nonfinite = True
    trainer = quiet_trainer(
        strategy="ddp_spawn", devices=2, max_epochs=1, default_root_dir=tmp_path
    )
    initial = [parameter.detach().clone() for parameter in task.parameters()]
    trainer.fit(task, datamodule=OneNanBatch())
    # rank 0's trained weights come back to this process: stepped, and still finite
    trained = list(task.parameters())
    assert any(
        not torch.equal(before, after) for before, after in zip(initial, trained, strict=True)
    )
    assert all(torch.isfinite(parameter).all() for parameter in trained)


def attention_below_uniform(task: ClassificationTask, images: torch.Tensor) -> float:
    """How far the class token's attention is from uniform over the tokens: log(tokens) minus
    its mean entropy over every block and head (0 for uniform attention)."""
    with torch.no_grad():
        rows = torch.stack([maps[:, :, 0] for maps in task.model.attention_maps(images)])
    return math.log(rows.shape[-1]) + float((rows * rows.log()).sum(-1).mean())


def test_training_reduces_the_loss_on_digits_and_learns_where_to_attend(digits_task, fit):
    torch.manual_seed(0)
    task = digits_task(lr=2e-2, warmup_epochs=0, label_smoothing=0.0)
    trainer, _ = fit(task, max_epochs=3)
    assert trainer.callback_metrics["val/acc1"] > 0.3
    assert trainer.callback_metrics["val/loss"] < 2.30  # below chance, ln(10)
    # the freshly initialised attention is uniform to 1e-4, and stays so if queries and keys
    # get no gradient (as with attention broken to a plain mean, which still fits the digits)
    batch = next(iter(trainer.datamodule.val_dataloader()))
    images, _ = trainer.datamodule.on_after_batch_transfer(batch, 0)
    assert attention_below_uniform(task.eval(), images) > 0.02  # measured: 0.05


def test_non_finite_loss_stops_naming_step_and_batch_or_skips_the_step(digits_task):
    task = digits_task()
    task.log = lambda *args, **kwargs: None
    images = torch.full((4, 1, 8, 8), float("nan"))
    batch = (images, torch.zeros(4, dtype=torch.long))
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss nan at global step 0 \(epoch 0, batch 3\)"
    ):
        task.training_step(batch, 3)
    task.skip_nonfinite = True
    assert task.training_step(batch, 3) is None
    assert task.training_step((torch.randn(4, 1, 8, 8), batch[1]), 4) is not None
