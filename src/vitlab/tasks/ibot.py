"""iBOT pretraining (Zhou et al., ICLR 2022): a student ViT learns to match an EMA teacher's
class-token output across views and its patch outputs at the positions the student saw masked.
The release (github.com/bytedance/ibot, main_ibot.py) is followed value by value."""

from __future__ import annotations

import random
from typing import Any, Literal

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchvision.ops import StochasticDepth

from vitlab.errors import UserError
from vitlab.models.ema import ModelEma
from vitlab.models.ibot import IBOTHead, IBOTLoss, MaskGenerator, encode, teacher_temperature
from vitlab.models.vit import VisionTransformer
from vitlab.optim import WarmupCosine
from vitlab.tasks.base import Config, RecipeTask

PatchObjective = Literal["distill", "pixel"] | None
Batch = tuple[list[torch.Tensor], torch.Tensor]


class IBOTTask(RecipeTask):
    """Student ``model`` (the ``${model}`` ViT, its classifier removed) + ``head``; the teacher
    is their EMA (``teacher.module.backbone``/``.head``, no gradient), with momentum from
    ``momentum_teacher`` to 1 by a per-step cosine, and without drop path (the release builds
    it with ``drop_path_rate=0``).

    Training batches are multi-crop views (``data.multi_crop``): the leading views of the first
    view's size are the global ones, the rest local. The teacher sees the global views; the
    student sees them with mask tokens (``mask_token``) on the patches ``masking`` (a
    ``MaskGenerator`` config) picks, and the local views unmasked. ``patch_objective``:
    ``distill`` (iBOT: the teacher's patch outputs at the masked positions), ``pixel`` (the
    masked patches' pixels, regressed by a linear layer on the student's patch tokens, mean
    squared error over the masked patches: masked image modelling + class-token distillation)
    or null (no masking, no patch loss: DINO). ``lambda_cls``/``lambda_patch`` weight the two
    losses (0 turns one off).

    Teacher temperatures rise linearly over ``warmup_teacher_temp_epochs`` epochs, the weight
    decay of the decayed parameters follows a per-step cosine from the optimizer's
    ``weight_decay`` to ``weight_decay_end``, the prototype layer (``last_layer``) gets no
    update for the first ``freeze_last_layer`` epochs, and each parameter's gradient is clipped
    to norm ``clip_grad`` on its own (the release's ``clip_gradients``; null: no clipping).

    Checkpoints hold the student encoder under ``model.``: fine-tuning, linear probing and k-NN
    read it through the usual loader. ``val/loss`` is that of the validation images as one view
    seen by both networks (masks seeded by batch index and rank): the patch loss plus the
    class-token cross-entropy between the masked student and the unmasked teacher.
    """

    def __init__(
        self,
        model: Config,
        optimizer: Config,
        head: Config | None = None,
        masking: Config | None = None,
        patch_objective: PatchObjective = "distill",
        lambda_cls: float = 1.0,
        lambda_patch: float = 1.0,
        student_temp: float = 0.1,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_patch_temp: float = 0.04,
        teacher_patch_temp: float = 0.07,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        momentum_teacher: float = 0.996,
        weight_decay_end: float = 0.4,
        freeze_last_layer: int = 1,
        clip_grad: float | None = 3.0,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        **recipe: Any,
    ):
        super().__init__(optimizer, monitor=monitor, mode=mode, **recipe)
        if patch_objective not in ("distill", "pixel", None):
            raise ValueError(
                f"patch_objective must be 'distill', 'pixel' or null, got {patch_objective!r}"
            )
        if lambda_cls == 0 and (patch_objective is None or lambda_patch == 0):
            raise ValueError("lambda_cls and lambda_patch are both off: nothing to train")
        self.model: VisionTransformer = instantiate(dict(model) | {"num_classes": 0})
        if self.model.global_pool != "token":
            raise ValueError("iBOT distils the class token: the model needs global_pool=token")
        dim = self.model.embed_dim
        head_config = dict(head or {})
        if patch_objective != "distill":
            head_config["shared"] = True  # no patch prototypes to train
        self.head = IBOTHead(dim, **head_config)
        self.patch_objective = patch_objective
        self.masking = MaskGenerator(**(masking or {}))
        self.mask_token = nn.Parameter(torch.zeros(1, dim)) if patch_objective else None
        patch_h, patch_w = self.model.patch_embed.patch_size
        in_chans = self.model.patch_embed.proj.in_channels
        self.pixel_head = (
            nn.Linear(dim, patch_h * patch_w * in_chans) if patch_objective == "pixel" else None
        )
        self.teacher = ModelEma(self.student(), momentum_teacher)
        for module in self.teacher.modules():
            if isinstance(module, StochasticDepth | nn.Dropout):
                module.p = 0.0
        self.loss = IBOTLoss(
            self.head.last_layer.out_features,
            self.head.patch_out_dim,
            student_temp,
            center_momentum,
            center_momentum,
            lambda_cls,
            lambda_patch,
        )
        self.cls_temps = (warmup_teacher_temp, teacher_temp)
        self.patch_temps = (warmup_teacher_patch_temp, teacher_patch_temp)
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.momentum_teacher = momentum_teacher
        self.weight_decay_end = weight_decay_end
        self.freeze_last_layer = freeze_last_layer
        self.clip_grad = clip_grad

    def student(self) -> nn.ModuleDict:
        """The trained networks as the teacher mirrors them (built on the fly: registered once,
        under ``model`` and ``head``, their checkpoint keys stay the loader's)."""
        return nn.ModuleDict({"backbone": self.model, "head": self.head})

    def trained_module(self) -> nn.Module:
        """The task: student, mask token and heads (the teacher has no trainable parameters)."""
        return self

    def val_metric_names(self) -> list[str]:
        return ["val/loss"]

    def no_weight_decay(self) -> set[str]:
        """None besides biases and norms: the release's ``get_params_groups`` decays every other
        weight, class token, position embeddings and mask token included."""
        return set()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The student's class token after its final norm (k-NN, linear probing)."""
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

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
            for name, param in self.head.named_parameters():
                if "last_layer" in name:
                    param.grad = None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step, then the teacher's EMA update with this step's momentum."""
        momentum = self.cosine(self.momentum_teacher, 1.0)
        super().optimizer_step(*args, **kwargs)
        self.teacher.decay = momentum
        self.teacher.update(self.student())

    # --- losses ------------------------------------------------------------------------------

    def split_views(self, views: list[torch.Tensor] | torch.Tensor) -> tuple[list, list]:
        if isinstance(views, torch.Tensor):
            raise UserError(
                "task=ibot trains on multi-crop views: set data.multi_crop (the ibot experiments "
                "do, e.g. experiment=digits_ibot)"
            )
        size = views[0].shape[-2:]
        num_global = next((i for i, v in enumerate(views) if v.shape[-2:] != size), len(views))
        return views[:num_global], views[num_global:]

    def draw_masks(
        self, views: list[torch.Tensor], rng: random.Random | None = None
    ) -> list[torch.Tensor] | None:
        if self.patch_objective is None:
            return None
        grid = self.model.patch_embed.grid_size
        return [self.masking(len(v), grid, rng).to(v.device, non_blocking=True) for v in views]

    def patch_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C * patch_h * patch_w): each patch's pixels."""
        patch = self.model.patch_embed.patch_size
        return F.unfold(images, patch, stride=patch).transpose(1, 2)

    def losses(
        self,
        global_views: list[torch.Tensor],
        local_views: list[torch.Tensor],
        masks: list[torch.Tensor] | None,
        same_view: bool = False,
    ) -> dict[str, torch.Tensor]:
        """``cls``, ``patch`` and ``loss`` (their weighted sum) of a batch of views; the centers
        are updated from the teacher's outputs. ``same_view`` (validation, one view): the class
        token is distilled from the teacher's output for the same view."""
        num = len(global_views)
        images = torch.cat(global_views)
        mask = torch.cat(masks) if masks is not None else None
        cls_temp, patch_temp = self.temperatures()
        with torch.no_grad():
            teacher_tokens = encode(self.teacher.module.backbone, images)
            teacher_cls, teacher_patch = self.teacher.module.head(teacher_tokens)
        tokens = encode(self.model, images, mask, self.mask_token)
        student_cls, student_patch = self.head(tokens)
        zero = tokens.new_zeros(())
        cls_loss, patch_loss = zero, zero
        if self.loss.lambda_cls > 0:
            local_cls = [
                self.head.forward_cls(encode(self.model, view)[:, 0]) for view in local_views
            ]
            if same_view:
                cls_loss = self.loss.cross_entropy(student_cls, teacher_cls, cls_temp).mean()
            else:
                student_views = [*student_cls.chunk(num), *local_cls]
                cls_loss = self.loss.cls_loss(student_views, teacher_cls.chunk(num), cls_temp)
        if self.patch_objective == "distill" and self.loss.lambda_patch > 0:
            patch_loss = self.loss.patch_loss(
                student_patch.chunk(num), teacher_patch.chunk(num), masks, patch_temp
            )
        elif self.patch_objective == "pixel" and self.loss.lambda_patch > 0:
            pred = self.pixel_head(tokens[:, 1:]).float()
            per_patch = (pred - self.patch_pixels(images).float()).pow(2).mean(-1)
            patch_loss = (per_patch * mask).sum() / mask.sum().clamp(min=1.0)
        if self.training:
            distilled = teacher_patch if self.patch_objective == "distill" else None
            self.loss.update_center(teacher_cls, distilled)
        loss = self.loss.lambda_cls * cls_loss + self.loss.lambda_patch * patch_loss
        return {"loss": loss, "cls": cls_loss, "patch": patch_loss}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        views, _ = batch
        global_views, local_views = self.split_views(views)
        losses = self.losses(global_views, local_views, self.draw_masks(global_views))
        self.log_step("train/loss", losses["loss"], prog_bar=True)
        self.log_step("train/cls_loss", losses["cls"])
        self.log_step("train/patch_loss", losses["patch"])
        return self.finite_or_stop(losses["loss"], batch_idx)

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str
    ) -> None:
        images, _ = batch
        rng = random.Random(batch_idx + 1_000_003 * self.global_rank)
        losses = self.losses([images], [], self.draw_masks([images], rng), same_view=True)
        self.log(f"{stage}/loss", losses["loss"], prog_bar=True, sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")
