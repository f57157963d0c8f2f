"""iBOT pretraining under a real Trainer on multi-crop digits: the teacher follows the EMA of
the student (no gradient into it), the schedules, the prototype freeze; the student encoder
loads into classifiers through the checkpoint loader."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from vitlab.data.digits import DigitsDataModule
from vitlab.models.checkpoint import load_pretrained
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.ibot import IBOTTask
from vitlab.tasks.linear_probe import LinearProbeTask

HEAD = dict(out_dim=16, patch_out_dim=16, hidden_dim=16, bottleneck_dim=8)
MULTI_CROP = dict(global_crops=2, global_scale=[0.5, 1.0], local_crops=2, local_size=4)


def ibot_task(vit_config, optimizer_config, **changes) -> IBOTTask:
    arguments = dict(
        model=vit_config(drop_path_rate=0.1),
        optimizer=optimizer_config(lr=1e-2, weight_decay=0.04),
        head=HEAD,
        warmup_epochs=0,
        warmup_lr=0.0,
        min_lr=0.0,
        schedule_interval="step",
        skip_nonfinite=False,
        momentum_teacher=0.9,
        weight_decay_end=0.4,
        warmup_teacher_temp_epochs=2,
    )
    return IBOTTask(**(arguments | changes))


def digits(**changes) -> DigitsDataModule:
    return DigitsDataModule(batch_size=16, multi_crop=MULTI_CROP, **changes)


def flat(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


class StepRecorder(L.Callback):
    """Teacher, student and the scheduled values around every optimizer step."""

    def __init__(self):
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, task, batch, batch_idx):
        self.steps.append(
            {
                "teacher": flat(task.teacher.module),
                "before": flat(task.student()),
                "step": task.global_step,
            }
        )

    def on_before_optimizer_step(self, trainer, task, optimizer):
        record = self.steps[-1]
        record["teacher_grads"] = [p.grad for p in task.teacher.parameters()]
        record["weight_decay"] = [g["weight_decay"] for g in optimizer.param_groups]

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        self.steps[-1] |= {"student": flat(task.student()), "after": flat(task.teacher.module)}


def test_the_teacher_gets_no_gradient_and_follows_the_students_ema(
    vit_config, optimizer_config, quiet_trainer
):
    torch.manual_seed(0)
    task = ibot_task(vit_config, optimizer_config, freeze_last_layer=1)
    recorder = StepRecorder()
    trainer = quiet_trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[recorder]
    )
    trainer.fit(task, datamodule=digits())
    assert all(not p.requires_grad for p in task.teacher.parameters())
    total = 4
    for record in recorder.steps:
        assert all(grad is None for grad in record["teacher_grads"])
        # the momentum of step it: 1 - (1 - 0.9) * (1 + cos(pi * it / total)) / 2
        it = record["step"]
        momentum = 1 - 0.1 * (1 + math.cos(math.pi * it / total)) / 2
        for name, after in record["after"].items():
            expected = momentum * record["teacher"][name] + (1 - momentum) * record["student"][name]
            torch.testing.assert_close(after, expected)
        # the decayed groups' weight decay: cosine 0.04 -> 0.4; the others none
        scheduled = 0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * it / total)) / 2
        assert sorted(set(record["weight_decay"])) == pytest.approx([0.0, scheduled])
        # the prototypes are frozen through the first epoch only
        prototypes = "head.last_layer.parametrizations.weight.original1"
        frozen = torch.equal(record["before"][prototypes], record["student"][prototypes])
        assert frozen == (it < 2)
    # centers moved away from zero
    assert task.loss.center.abs().sum() > 0 and task.loss.patch_center.abs().sum() > 0


def test_the_teacher_runs_without_drop_path_and_the_student_with_it(vit_config, optimizer_config):
    task = ibot_task(vit_config, optimizer_config)
    assert task.model.blocks[1].drop_path.p == pytest.approx(0.1)
    assert task.teacher.module.backbone.blocks[1].drop_path.p == 0.0


def test_every_parameter_gradient_is_clipped_on_its_own(vit_config, optimizer_config):
    task = ibot_task(vit_config, optimizer_config, clip_grad=0.5, freeze_last_layer=0)
    for param in task.parameters():
        param.grad = torch.full_like(param, 3.0) if param.requires_grad else None
    small = task.model.cls_token
    small.grad = torch.full_like(small, 1e-3)
    task.on_before_optimizer_step(None)
    for param in task.parameters():
        if param.grad is not None and param is not small:
            assert param.grad.norm() == pytest.approx(0.5, rel=1e-4)
    assert small.grad.norm() < 0.5


@pytest.mark.parametrize(
    ("changes", "trained"),
    [
        (dict(patch_objective="pixel"), "pixel_head.weight"),
        (dict(patch_objective=None), None),
        (dict(lambda_cls=0.0), "mask_token"),
    ],
)
def test_the_patch_objective_switches_to_pixels_or_off(
    vit_config, optimizer_config, changes, trained
):
    torch.manual_seed(0)
    task = ibot_task(vit_config, optimizer_config, **changes)
    views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 4)]
    global_views, local_views = task.split_views(views)
    assert len(global_views) == 2 and len(local_views) == 1
    masks = task.draw_masks(global_views)
    losses = task.losses(global_views, local_views, masks)
    losses["loss"].backward()
    if changes.get("patch_objective", "distill") is None:
        assert masks is None and task.mask_token is None and losses["patch"] == 0
    if trained is not None:
        assert task.get_parameter(trained).grad is not None
    if changes.get("lambda_cls") == 0.0:
        assert losses["cls"] == 0


def test_the_student_encoder_loads_into_classifiers_through_the_checkpoint_loader(
    vit_config, optimizer_config, quiet_trainer, tmp_path, task_recipe
):
    torch.manual_seed(0)
    task = ibot_task(vit_config, optimizer_config)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=1)
    trainer.fit(task, datamodule=digits())
    path = tmp_path / "ibot.ckpt"
    trainer.save_checkpoint(path)
    config = vit_config(global_pool="avg")
    config.pop("_target_")
    classifier = VisionTransformer(**config)
    load_pretrained(classifier, path)
    student = task.model.state_dict()
    for name, tensor in classifier.state_dict().items():
        if not name.startswith(("head.", "fc_norm.")):
            torch.testing.assert_close(tensor, student[name])
    recipe = task_recipe("linear_probe", pretrained=str(path))
    probe = LinearProbeTask(vit_config(), optimizer_config(), **recipe)
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(probe, datamodule=DigitsDataModule())
    torch.testing.assert_close(
        probe.model.blocks[0].attn.qkv.weight, task.model.blocks[0].attn.qkv.weight
    )
    # the k-NN features are the student's class token
    task.eval()
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(task.features(images), task.model.forward_features(images)[:, 0])


def test_plain_batches_are_refused_with_the_setting_named(vit_config, optimizer_config):
    task = ibot_task(vit_config, optimizer_config)
    with pytest.raises(Exception, match="data.multi_crop"):
        task.split_views(torch.randn(2, 1, 8, 8))
