"""iBOT pretraining under a real Trainer on multi-crop digits: the teacher follows the EMA of
the student (no gradient into it), the schedules (the lr's as the release's), the prototype
freeze, the collapse diagnostics logged; checkpoints hold the architecture's state dict, whose
teacher encoder loads into classifiers through the checkpoint loader and gives k-NN its features."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from vitlab.data.digits import DigitsDataModule
from vitlab.models.checkpoint import load_pretrained
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.ibot import IBOTTask
from vitlab.tasks.linear_probe import LinearProbeTask

HEAD = dict(out_dim=16, patch_out_dim=16, hidden_dim=16, bottleneck_dim=8)
MULTI_CROP = dict(global_crops=2, global_scale=[0.5, 1.0], local_crops=2, local_size=4)


@pytest.fixture
def ibot_task(vit_config, optimizer_config, ibot_recipe):
    """``ibot_task(**changes)``: the recipe (conf/task/ibot.yaml) on the tiny ViT, a small head,
    no lr warmup, a faster teacher and temperature warmup."""

    def build(**changes) -> IBOTTask:
        arguments = ibot_recipe | dict(
            model=vit_config(drop_path_rate=0.1),
            optimizer=optimizer_config(lr=1e-2, weight_decay=0.04),
            head=ibot_recipe["head"] | HEAD,
            warmup_epochs=0,
            momentum_teacher=0.9,
            warmup_teacher_temp_epochs=2,
        )
        return IBOTTask(**(arguments | changes))

    return build


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
                "teacher": flat(task.ibot.teacher.module),
                "before": flat(task.ibot.student()),
                "step": task.global_step,
            }
        )

    def on_before_optimizer_step(self, trainer, task, optimizer):
        record = self.steps[-1]
        record["teacher_grads"] = [p.grad for p in task.ibot.teacher.parameters()]
        record["weight_decay"] = [g["weight_decay"] for g in optimizer.param_groups]

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        self.steps[-1] |= {
            "student": flat(task.ibot.student()),
            "after": flat(task.ibot.teacher.module),
        }


def test_the_teacher_gets_no_gradient_and_follows_the_students_ema(ibot_task, quiet_trainer):
    torch.manual_seed(0)
    task = ibot_task(freeze_last_layer=1)
    recorder = StepRecorder()
    trainer = quiet_trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[recorder]
    )
    trainer.fit(task, datamodule=digits())
    assert all(not p.requires_grad for p in task.ibot.teacher.parameters())
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
    assert task.ibot.loss.center.abs().sum() > 0 and task.ibot.loss.patch_center.abs().sum() > 0


def test_the_teacher_runs_without_drop_path_and_the_student_with_it(ibot_task):
    task = ibot_task()
    assert task.model.blocks[1].drop_path.p == pytest.approx(0.1)
    assert task.ibot.teacher.module.backbone.blocks[1].drop_path.p == 0.0


def test_every_parameter_gradient_is_clipped_on_its_own(ibot_task):
    task = ibot_task(clip_grad=0.5, freeze_last_layer=0)
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
def test_the_patch_objective_switches_to_pixels_or_off(ibot_task, changes, trained):
    torch.manual_seed(0)
    task = ibot_task(**changes)
    views = [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 4)]
    global_views, local_views = task.ibot.split_views(views)
    assert len(global_views) == 2 and len(local_views) == 1
    masks = task.ibot.draw_masks(global_views)
    losses = task.ibot(views, *task.temperatures(), masks=masks)
    losses["loss"].backward()
    if changes.get("patch_objective", "distill") is None:
        assert masks is None and task.ibot.mask_token is None and losses["patch"] == 0
    if trained is not None:
        assert task.ibot.get_parameter(trained).grad is not None
    if changes.get("lambda_cls") == 0.0:
        assert losses["cls"] == 0


def test_the_teacher_encoder_loads_into_classifiers_and_gives_the_knn_features(
    ibot_task, vit_config, optimizer_config, quiet_trainer, tmp_path, task_recipe
):
    torch.manual_seed(0)
    task = ibot_task()
    trainer = quiet_trainer(max_steps=1, limit_val_batches=1)
    trainer.fit(task, datamodule=digits())
    path = tmp_path / "ibot.ckpt"
    trainer.save_checkpoint(path)
    # the file holds the architecture's state dict: the student encoder as model.*, the
    # teacher's as teacher.module.backbone.*
    state = torch.load(path, weights_only=True)["state_dict"]
    assert state.keys() == task.ibot.state_dict().keys()
    assert {name.split(".")[0] for name in state} == {
        "model",
        "head",
        "mask_token",
        "teacher",
        "loss",
    }
    assert any(name.startswith("teacher.module.backbone.blocks.") for name in state)
    assert any(name.startswith("teacher.module.head.last_layer.") for name in state)
    reloaded = IBOTTask.load_from_checkpoint(path)
    for name, tensor in task.ibot.state_dict().items():
        torch.testing.assert_close(reloaded.ibot.state_dict()[name], tensor, msg=name)
    config = vit_config(global_pool="avg")
    config.pop("_target_")
    classifier = VisionTransformer(**config)
    load_pretrained(classifier, path)
    teacher = task.ibot.teacher.module.backbone
    qkv = "blocks.0.attn.qkv.weight"
    # one step at momentum < 1 leaves the teacher behind the student
    assert not torch.allclose(teacher.get_parameter(qkv), task.model.get_parameter(qkv))
    for name, tensor in classifier.state_dict().items():
        if not name.startswith(("head.", "fc_norm.")):
            torch.testing.assert_close(tensor, teacher.state_dict()[name], msg=name)
    recipe = task_recipe("linear_probe", pretrained=str(path))
    probe = LinearProbeTask(vit_config(), optimizer_config(), **recipe)
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(probe, datamodule=DigitsDataModule())
    torch.testing.assert_close(probe.model.get_parameter(qkv), teacher.get_parameter(qkv))
    # the k-NN features are the teacher's class token
    task.eval()
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(task.features(images), teacher.forward_features(images)[:, 0])


def test_plain_batches_are_refused_with_the_setting_named(ibot_task):
    task = ibot_task()
    with pytest.raises(Exception, match="data.multi_crop"):
        task.ibot.split_views(torch.randn(2, 1, 8, 8))


def release_cosine_scheduler(
    base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0
):
    """The release's ``utils.cosine_scheduler`` (DINO's), transcribed."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (
        1 + np.cos(np.pi * iters / len(iters))
    )
    return np.concatenate((warmup_schedule, schedule))


@pytest.mark.parametrize(("warmup_epochs", "warmup_lr"), [(2, 0.0), (1, 1e-4), (0, 0.0)])
def test_the_lr_follows_the_releases_cosine_scheduler(ibot_task, warmup_epochs, warmup_lr):
    # 4 epochs of 5 steps, peak lr 2e-3, min lr 1e-5: the peak on the warmup's last step
    task = ibot_task(warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, min_lr=1e-5)
    schedule = task.lr_schedule(2e-3, total_steps=20, steps_per_epoch=5)
    ours = [2e-3 * schedule(step) for step in range(20)]
    release = release_cosine_scheduler(2e-3, 1e-5, 4, 5, warmup_epochs, warmup_lr)
    np.testing.assert_allclose(ours, release, rtol=1e-12, atol=1e-15)


def test_every_logging_step_logs_the_teachers_collapse_diagnostics(ibot_task, quiet_trainer):
    torch.manual_seed(0)
    task = ibot_task()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(task, datamodule=digits())
    logged = trainer.logged_metrics
    head = HEAD["out_dim"]
    assert 0 < logged["train/ibot/teacher_entropy"] <= math.log(head) + 1e-5
    assert 0 < logged["train/ibot/teacher_mean_entropy"] <= math.log(head) + 1e-5
    assert -1 <= logged["train/ibot/feature_cosine"] <= 1
