"""iBOT pretraining (Zhou et al., ICLR 2022): a student ViT learns to match an EMA teacher's
class-token output across views and its patch outputs at the positions the student saw masked.
The release (github.com/bytedance/ibot, main_ibot.py) is followed value by value; the
architecture and its losses are ``vitlab.models.ibot.IBOT``, this task its training recipe."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Literal

import torch
from hydra.utils import instantiate

from vitlab.models.ibot import IBOT, teacher_temperature
from vitlab.models.vit import VisionTransformer
from vitlab.optim import WarmupCosine
from vitlab.tasks.base import Config, RecipeTask

Batch = tuple[list[torch.Tensor], torch.Tensor]
# the architecture's place in the task; a checkpoint's state dict is the architecture's own
ARCHITECTURE = "ibot."
# the teacher's diagnostics logged every logging step (vitlab.models.ibot: how to read them)
DIAGNOSTICS = ("teacher_entropy", "teacher_mean_entropy", "feature_cosine")


class IBOTTask(RecipeTask):
    """iBOT's training recipe around its architecture (``ibot``: an ``IBOT`` of the ``${model}``
    ViT, its classifier removed, with ``head``, ``masking``, ``patch_objective``, the loss
    weights, ``student_temp`` and ``center_momentum``).

    Training batches are multi-crop views (``data.multi_crop``): the leading views of the first
    view's size are the global ones, the rest local. The schedules are the release's: teacher
    temperatures (class and patch) rise linearly over ``warmup_teacher_temp_epochs`` epochs; the
    teacher's EMA momentum follows a per-step cosine from ``momentum_teacher`` to 1 and the
    weight decay of the decayed parameters one from the optimizer's ``weight_decay`` to
    ``weight_decay_end``; the lr warms up to its peak on the warmup's last step
    (``np.linspace``). The prototype layer (``last_layer``) gets no update for the first
    ``freeze_last_layer`` epochs, and each parameter's gradient is clipped to norm ``clip_grad``
    on its own (the release's ``clip_gradients``; null: no clipping).

    Every logging step logs the losses and the teacher's collapse diagnostics
    (``train/ibot/teacher_entropy``, ``train/ibot/teacher_mean_entropy``,
    ``train/ibot/feature_cosine``), computed on the device.

    Checkpoints hold the architecture's state dict: the student encoder under ``model.``, the
    teacher under ``teacher.module.``; k-NN scores the teacher's encoder, and fine-tuning and
    linear probing load it (the usual loader), as the release evaluates its teacher.
    ``val/loss`` is that of the validation images as one view seen by both networks (masks
    seeded by batch index and rank): the patch loss plus the class-token cross-entropy between
    the masked student and the unmasked teacher.
    """

    def __init__(
        self,
        model: Config,
        optimizer: Config,
        head: Config,
        masking: Config,
        patch_objective: Literal["distill", "pixel"] | None,
        lambda_cls: float,
        lambda_patch: float,
        student_temp: float,
        warmup_teacher_temp: float,
        teacher_temp: float,
        warmup_teacher_patch_temp: float,
        teacher_patch_temp: float,
        warmup_teacher_temp_epochs: int,
        center_momentum: float,
        momentum_teacher: float,
        weight_decay_end: float,
        freeze_last_layer: int,
        clip_grad: float | None,
        monitor: str,
        mode: Literal["min", "max"],
        **recipe: Any,
    ):
        super().__init__(optimizer, monitor=monitor, mode=mode, **recipe)
        encoder: VisionTransformer = instantiate(dict(model) | {"num_classes": 0})
        self.ibot = IBOT(
            encoder,
            head,
            masking,
            patch_objective,
            lambda_cls,
            lambda_patch,
            student_temp,
            center_momentum,
        )
        self.cls_temps = (warmup_teacher_temp, teacher_temp)
        self.patch_temps = (warmup_teacher_patch_temp, teacher_patch_temp)
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.momentum_teacher = momentum_teacher
        self.weight_decay_end = weight_decay_end
        self.freeze_last_layer = freeze_last_layer
        self.clip_grad = clip_grad

    @property
    def model(self) -> VisionTransformer:
        """The student encoder: what k-NN, export and the callbacks take as the task's model."""
        return self.ibot.model

    def trained_module(self) -> IBOT:
        """The architecture: student, mask token and heads (the teacher has no trainable
        parameters)."""
        return self.ibot

    def val_metric_names(self) -> list[str]:
        return ["val/loss"]

    def no_weight_decay(self) -> set[str]:
        """None besides biases and norms: the release's ``get_params_groups`` decays every other
        weight, class token, position embeddings and mask token included."""
        return set()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's class token after its final norm (k-NN)."""
        return self.ibot.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    # --- checkpoints: the architecture's state dict ------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {
            name.removeprefix(ARCHITECTURE): tensor for name, tensor in state.items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {ARCHITECTURE + name: tensor for name, tensor in state.items()}

    # --- schedules ---------------------------------------------------------------------------

    def temperatures(self) -> tuple[float, float]:
        """The teacher's class and patch temperatures this epoch."""
        epoch, warmup = self.current_epoch, self.warmup_teacher_temp_epochs
        return (
            teacher_temperature(epoch, *self.cls_temps, warmup),
            teacher_temperature(epoch, *self.patch_temps, warmup),
        )

    def cosine(self, start: float, end: float) -> float:
        """``start`` at the first optimizer step to ``end`` at the last: the release's
        ``cosine_scheduler`` without warmup, at ``global_step``."""
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return end + (start - end) * WarmupCosine(0, total)(self.global_step)

    def lr_schedule(self, lr: float, total_steps: int, steps_per_epoch: int) -> WarmupCosine:
        """The recipe's schedule with the release's warmup (``cosine_scheduler``:
        ``np.linspace(warmup_lr, lr, warmup_steps)``): the peak on the warmup's last step."""
        schedule = super().lr_schedule(lr, total_steps, steps_per_epoch)
        return dataclasses.replace(schedule, warmup_endpoint=True)

    def configure_optimizers(self) -> dict:
        config = super().configure_optimizers()
        for group in config["optimizer"].param_groups:
            group["scheduled_weight_decay"] = group["weight_decay"]
        return config

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                start = group.get("scheduled_weight_decay", 0.0)
                if start > 0:
                    group["weight_decay"] = self.cosine(start, self.weight_decay_end)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The release's order: per-parameter gradient clipping, then no update of the
        prototypes during the first ``freeze_last_layer`` epochs."""
        if self.clip_grad:
            for param in self.parameters():
                if param.grad is not None:
                    norm = param.grad.norm(2)
                    param.grad.mul_(torch.clamp(self.clip_grad / (norm + 1e-6), max=1.0))
        if self.current_epoch < self.freeze_last_layer:
            for name, param in self.ibot.head.named_parameters():
                if "last_layer" in name:
                    param.grad = None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step, then the teacher's EMA update with this step's momentum."""
        momentum = self.cosine(self.momentum_teacher, 1.0)
        super().optimizer_step(*args, **kwargs)
        self.ibot.update_teacher(momentum)

    # --- steps -------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        views, _ = batch
        out = self.ibot(views, *self.temperatures())
        self.log_step("train/loss", out["loss"], prog_bar=True)
        self.log_step("train/cls_loss", out["cls"])
        self.log_step("train/patch_loss", out["patch"])
        for name in DIAGNOSTICS:
            self.log_step(f"train/ibot/{name}", out[name])
        return self.finite_or_stop(out["loss"], batch_idx)

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str
    ) -> None:
        images, _ = batch
        rng = random.Random(batch_idx + 1_000_003 * self.global_rank)
        masks = self.ibot.draw_masks([images], rng)
        out = self.ibot([images], *self.temperatures(), masks=masks, same_view=True)
        self.log(f"{stage}/loss", out["loss"], prog_bar=True, sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")
