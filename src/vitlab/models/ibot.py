"""iBOT (Zhou et al., ICLR 2022): masked-patch and class-token self-distillation, as the
release (github.com/bytedance/ibot) computes it.

- ``block_mask``/``MaskGenerator``: the release's blockwise masking (``loader.py``
  ``ImageFolderMask``, after BEiT's masking generator) and its per-image ratio draw;
- ``IBOTHead``: the projection head (``models/head.py`` ``iBOTHead``): a 3-layer GELU MLP to a
  bottleneck, l2-normalised, then weight-normalised prototypes, shared by the class and patch
  tokens by default;
- ``encode``: a ViT's tokens with mask tokens in place of the masked patches (the release's
  ``mask_model``), through the ViT's own position encoding (any ``pos_embed``), its table
  resampled for crops of another size (local crops);
- ``IBOTLoss``: the release's ``iBOTLoss``: teacher centering and sharpening, class-token
  cross-entropy across different views, patch cross-entropy on the masked positions of the same
  view, centers all-reduced across processes;
- ``IBOT``: the architecture (dinov2's ``SSLMetaArch`` in shape): student, EMA teacher, heads,
  masking and loss, ``forward(views, cls_temp, patch_temp) -> losses``; the task
  (``vitlab.tasks.ibot``) keeps the schedules and the logging.

Collapse diagnostics (``target_entropy``, ``mean_target_entropy``, ``feature_cosine``, logged as
``train/ibot/teacher_entropy``, ``teacher_mean_entropy``, ``feature_cosine``), on the teacher's
centred and sharpened class-token targets over K prototypes and its class-token features: a
uniform collapse (every target flat) shows a target entropy near ln K; a one-hot collapse
(every image onto the same prototype) a batch-mean entropy near 0 and a feature cosine near 1.
Healthy training has a low per-image entropy (confident targets) and a high batch-mean entropy
(different images on different prototypes).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torchvision.ops import StochasticDepth

from vitlab.errors import UserError
from vitlab.models.ema import ModelEma
from vitlab.models.vit import VisionTransformer, init_linear_and_norm

# the release's pred_aspect_ratio (main_ibot.py passes (0.3, 1 / 0.3))
ASPECT_RATIO = (0.3, 1 / 0.3)
# BEiT's masking generator: up to 10 tries per block
BLOCK_ATTEMPTS = 10
# the release's interpolate_pos_encoding scales the table by (new + 0.1) / old per axis
INTERPOLATE_OFFSET = 0.1


def block_mask(
    grid: tuple[int, int],
    ratio: float,
    rng: random.Random,
    aspect_ratio: tuple[float, float] = ASPECT_RATIO,
) -> torch.Tensor:
    """A (H, W) boolean mask of about ``ratio * H * W`` patches in rectangular blocks: the
    release's ``pred_shape='block'`` loop, draw for draw (python's ``random``).

    Blocks of area uniform in [(min(H, W) // 3) ** 2, what is left to mask] and log-uniform
    aspect ratio are added while they add at least one patch without passing the target; the
    loop stops at the target or after 10 fruitless tries, so the masked count may fall short of
    it and never exceeds it. Drawn in numpy, as the release does (no torch op per block)."""
    height, width = grid
    mask = np.zeros((height, width), dtype=bool)
    high = ratio * height * width
    log_aspect = (math.log(aspect_ratio[0]), math.log(aspect_ratio[1]))
    count = 0
    while count < high:
        max_mask = high - count
        delta = 0
        for _ in range(BLOCK_ATTEMPTS):
            low = (min(height, width) // 3) ** 2
            target_area = rng.uniform(low, max_mask)
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < width and h < height:
                top = rng.randint(0, height - h)
                left = rng.randint(0, width - w)
                block = mask[top : top + h, left : left + w]
                added = h * w - int(block.sum())
                if 0 < added <= max_mask:
                    block[...] = True
                    delta += added
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return torch.from_numpy(mask)


class MaskGenerator:
    """Per-image masks of a batch of views: each image draws its ratio as the release's
    ``get_pred_ratio`` (one of ``ratios``, each ``r +- var`` uniform), then a block (or
    uniformly random) mask of that ratio.

    The iBOT recipe, ``ratios=[0, 0.3]`` and ``ratio_vars=[0, 0.2]``, leaves half the images
    unmasked and masks the other half at a ratio uniform in [0.1, 0.5].
    """

    def __init__(
        self,
        ratios: Sequence[float],
        ratio_vars: Sequence[float],
        shape: Literal["block", "rand"],
    ):
        if len(ratios) != len(ratio_vars):
            raise ValueError(
                f"mask ratios {list(ratios)} and ratio_vars {list(ratio_vars)} differ in length"
            )
        for ratio, var in zip(ratios, ratio_vars, strict=True):
            if not 0 <= ratio - var <= ratio + var < 1:
                raise ValueError(f"mask ratio {ratio} +- {var} must lie in [0, 1)")
        if shape not in ("block", "rand"):
            raise ValueError(f"mask shape must be 'block' or 'rand', got {shape!r}")
        self.ratios, self.ratio_vars, self.shape = list(ratios), list(ratio_vars), shape

    def ratio_range(self) -> tuple[float, float]:
        """The smallest and largest ratio an image can draw."""
        lows = [ratio - var for ratio, var in zip(self.ratios, self.ratio_vars, strict=True)]
        highs = [ratio + var for ratio, var in zip(self.ratios, self.ratio_vars, strict=True)]
        return min(lows), max(highs)

    def draw_ratio(self, rng: random.Random) -> float:
        drawn = [
            rng.uniform(ratio - var, ratio + var) if var > 0 else ratio
            for ratio, var in zip(self.ratios, self.ratio_vars, strict=True)
        ]
        return rng.choice(drawn) if len(drawn) > 1 else drawn[0]

    def __call__(
        self, batch: int, grid: tuple[int, int], rng: random.Random | None = None
    ) -> torch.Tensor:
        """(batch, H * W) boolean masks, True on the patches the student sees as mask tokens."""
        rng = rng if rng is not None else random
        masks = []
        for _ in range(batch):
            ratio = self.draw_ratio(rng)
            if self.shape == "block":
                masks.append(block_mask(grid, ratio, rng).flatten())
            else:
                count = int(ratio * grid[0] * grid[1])
                mask = np.zeros(grid[0] * grid[1], dtype=bool)
                mask[rng.sample(range(len(mask)), count)] = True
                masks.append(torch.from_numpy(mask))
        return torch.stack(masks)


def encode(
    vit: VisionTransformer,
    images: torch.Tensor,
    mask: torch.Tensor | None = None,
    mask_token: torch.Tensor | None = None,
) -> torch.Tensor:
    """All tokens of ``vit`` after its final norm, (B, 1 + N, D), with ``mask_token`` (D,)
    replacing the patch embeddings where ``mask`` (B, N) is True, before the position encoding
    (the release's ``mask_model``): the ViT's ``prepare_tokens``, blocks and norm. Unmasked, it
    is ``vit.forward_features``. Crops of another size (local crops) need a position table,
    resampled bicubically to their grid as the release's ``interpolate_pos_encoding`` does."""
    tokens = vit.prepare_tokens(images, mask, mask_token, interpolate_offset=INTERPOLATE_OFFSET)
    return vit.norm(vit.blocks(tokens))


class IBOTHead(nn.Module):
    """The release's ``iBOTHead``: Linear-GELU layers (``num_layers`` - 1 of width
    ``hidden_dim``) to a ``bottleneck_dim`` projection, l2-normalised, then ``last_layer``: a
    weight-normalised Linear without bias onto ``out_dim`` prototypes, its norm fixed at 1 with
    ``norm_last_layer``. The class token goes through ``last_layer``, the patch tokens through
    the same layer (``shared``) or their own ``last_layer2`` (``patch_out_dim`` prototypes).
    ``norm="bn"`` puts one BatchNorm after every hidden Linear, the same module each time, as the
    release's ``DINOHead`` builds it (``--norm_in_head bn``; statistics over every token of the
    batch; ``trainer.sync_batchnorm`` under DDP).

    Checkpoint names follow the release's (``mlp.N``, ``last_layer``; the shared BatchNorm under
    each of its positions); the weight norm is torch's parametrization
    (``last_layer.parametrizations.weight.original0`` is the release's ``weight_g``,
    ``original1`` its ``weight_v``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        patch_out_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        num_layers: int,
        norm_last_layer: bool,
        shared: bool,
        norm: Literal["bn"] | None,
    ):
        super().__init__()
        if norm not in ("bn", None):
            raise ValueError(f"head norm must be 'bn' or null, got {norm!r}")
        self.batch_norm = norm == "bn"
        shared_norm = [nn.BatchNorm1d(hidden_dim)] if self.batch_norm else []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), *shared_norm, nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], bottleneck_dim))
        self.mlp.apply(init_linear_and_norm)
        self.last_layer = prototypes(bottleneck_dim, out_dim, norm_last_layer)
        self.shared = shared
        self.last_layer2 = (
            None if shared else prototypes(bottleneck_dim, patch_out_dim, norm_last_layer)
        )

    @property
    def patch_out_dim(self) -> int:
        layer = self.last_layer if self.last_layer2 is None else self.last_layer2
        return layer.out_features

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1 + N, D) tokens -> class logits (B, out_dim), patch logits (B, N, patch_out_dim)."""
        projected = F.normalize(self.project(tokens), dim=-1, p=2)
        patch_layer = self.last_layer if self.last_layer2 is None else self.last_layer2
        return self.last_layer(projected[:, 0]), patch_layer(projected[:, 1:])

    def forward_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N, D) tokens -> class logits (B, out_dim): the local crops' head. The MLP
        sees the class tokens only; with BatchNorm, every token, as the release's head does (its
        statistics are those of all tokens), though only the class logits are used."""
        seen = tokens if self.batch_norm else tokens[:, :1]
        return self.last_layer(F.normalize(self.project(seen)[:, 0], dim=-1, p=2))

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """The MLP on the last dimension (BatchNorm over every leading position)."""
        return self.mlp(tokens.flatten(0, -2)).unflatten(0, tokens.shape[:-1])


def prototypes(in_dim: int, out_dim: int, norm_last_layer: bool) -> nn.Linear:
    """The weight-normalised prototype layer, its norm (``weight_g``) filled with 1 and, with
    ``norm_last_layer``, frozen there."""
    layer = weight_norm(nn.Linear(in_dim, out_dim, bias=False))
    norm = layer.parametrizations.weight.original0
    norm.data.fill_(1.0)
    norm.requires_grad_(not norm_last_layer)
    return layer


def teacher_temperature(epoch: int, warmup: float, final: float, warmup_epochs: int) -> float:
    """The release's per-epoch schedule: ``np.linspace(warmup, final, warmup_epochs)`` for the
    first epochs, then ``final``."""
    if epoch >= warmup_epochs:
        return final
    if warmup_epochs == 1:
        return warmup
    return warmup + (final - warmup) * epoch / (warmup_epochs - 1)


class IBOTLoss(nn.Module):
    """Cross-entropy between the sharpened, centered teacher outputs and the student's.

    Class token: every student view (global and local) against the teacher's output for every
    *other* global view, averaged over the pairs. Patches: each global view's student patch
    logits against the teacher's for the same (unmasked) view, averaged over that image's masked
    positions (images without masked patches add zero), then over images and views. Each is
    weighted (``lambda_cls``, ``lambda_patch``; 0 turns it off). The centers are updated after
    every call with momentum ``center_momentum`` from the batch mean of the teacher outputs
    (patch center: over the mean of each image's patch outputs), summed over every process.
    """

    def __init__(
        self,
        out_dim: int,
        patch_out_dim: int,
        student_temp: float,
        center_momentum: float,
        patch_center_momentum: float,
        lambda_cls: float,
        lambda_patch: float,
    ):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.patch_center_momentum = patch_center_momentum
        self.lambda_cls, self.lambda_patch = lambda_cls, lambda_patch
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("patch_center", torch.zeros(1, 1, patch_out_dim))

    def target(
        self, teacher: torch.Tensor, temp: float, center: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The teacher's centred, sharpened distribution ``softmax((teacher - center) / temp)``
        (the class center unless another is given), without gradient."""
        center = self.center if center is None else center
        return F.softmax((teacher - center) / temp, dim=-1).detach()

    def cross_entropy(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        temp: float,
        center: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``-sum(target * log_softmax(student / student_temp))`` over the last dimension."""
        target = self.target(teacher, temp, center)
        return torch.sum(-target * F.log_softmax(student / self.student_temp, dim=-1), dim=-1)

    def cls_loss(
        self, student_cls: Sequence[torch.Tensor], teacher_cls: Sequence[torch.Tensor], temp: float
    ) -> torch.Tensor:
        """Student views (globals first, then locals) against the other global views' teacher,
        averaged over the pairs."""
        total, terms = student_cls[0].new_zeros(()), 0
        for q, teacher in enumerate(teacher_cls):
            for v, student in enumerate(student_cls):
                if v != q:
                    total = total + self.cross_entropy(student, teacher, temp).mean()
                    terms += 1
        return total / max(terms, 1)

    def patch_loss(
        self,
        student_patch: Sequence[torch.Tensor],
        teacher_patch: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        temp: float,
    ) -> torch.Tensor:
        """Per global view, the masked positions' cross-entropy with the same view's teacher:
        averaged over each image's masked patches (0 for an unmasked image), then the images,
        then the views."""
        total = student_patch[0].new_zeros(())
        for student, teacher, mask in zip(student_patch, teacher_patch, masks, strict=True):
            per_patch = self.cross_entropy(student, teacher, temp, self.patch_center)
            mask = mask.float()
            per_image = (per_patch * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
            total = total + per_image.mean()
        return total / len(student_patch)

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor | None) -> None:
        """``teacher_cls`` (B, K) and ``teacher_patch`` (B, N, K2) of all global views."""
        self.center.copy_(self._momentum(self.center, teacher_cls, self.center_momentum))
        if teacher_patch is not None:
            mean = self._momentum(
                self.patch_center, teacher_patch.mean(1), self.patch_center_momentum
            )
            self.patch_center.copy_(mean)

    @staticmethod
    def _momentum(center: torch.Tensor, outputs: torch.Tensor, momentum: float) -> torch.Tensor:
        batch_sum = outputs.float().sum(dim=0, keepdim=True)
        count = len(outputs)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        return center * momentum + (batch_sum / count).view_as(center) * (1 - momentum)


# --- collapse diagnostics ------------------------------------------------------------------------


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """``-sum(p * ln p)`` over the last dimension (0 ln 0 = 0), in nats."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def target_entropy(targets: torch.Tensor) -> torch.Tensor:
    """The mean entropy of (B, K) target distributions: ln K when every target is uniform."""
    return entropy(targets.float()).mean()


def mean_target_entropy(targets: torch.Tensor) -> torch.Tensor:
    """The entropy of the batch's mean target: 0 when every image gets the same one-hot one."""
    return entropy(targets.float().mean(0))


def feature_cosine(features: torch.Tensor) -> torch.Tensor:
    """The mean cosine similarity between the (B, D) features of different rows (the
    diagonal left out): 1 when every image has the same feature direction."""
    unit = F.normalize(features.float(), dim=-1)
    gram, count = unit @ unit.T, len(unit)
    return (gram.sum() - gram.diagonal().sum()) / (count * (count - 1))


# --- the architecture -----------------------------------------------------------------------------


class IBOT(nn.Module):
    """iBOT's architecture (dinov2's ``SSLMetaArch`` in shape): the student (``model``, a ViT
    encoder; ``head``; the ``mask_token`` of its input; ``pixel_head`` with
    ``patch_objective="pixel"``), its EMA teacher (``teacher.module.{backbone,head}``: no
    gradient, no drop path, the parameters averaged and its own BatchNorm statistics, as the
    release's), the blockwise ``masking`` of the global views and the ``loss`` with its centers.

    ``forward(views, cls_temp, patch_temp)`` returns the losses of a batch of multi-crop views
    and the teacher's collapse diagnostics; the caller owns the schedules (teacher temperatures
    and momentum: ``update_teacher`` after each optimizer step). ``patch_objective``:
    ``distill`` (the teacher's patch outputs, iBOT), ``pixel`` (the masked patches' pixels, a
    linear head and MSE) or None (no masking, no patch loss: DINO).

    Its state dict is the layout of an iBOT checkpoint: the student encoder as ``model.*``, the
    teacher's as ``teacher.module.backbone.*``, which fine-tuning and probing load
    (``vitlab.models.checkpoint``), as the release evaluates its teacher.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        head: Mapping[str, Any],
        masking: Mapping[str, Any],
        patch_objective: Literal["distill", "pixel"] | None,
        lambda_cls: float,
        lambda_patch: float,
        student_temp: float,
        center_momentum: float,
    ):
        super().__init__()
        if patch_objective not in ("distill", "pixel", None):
            raise ValueError(
                f"patch_objective must be 'distill', 'pixel' or null, got {patch_objective!r}"
            )
        if lambda_cls == 0 and (patch_objective is None or lambda_patch == 0):
            raise ValueError("lambda_cls and lambda_patch are both off: nothing to train")
        if encoder.global_pool != "token":
            raise ValueError("iBOT distils the class token: the model needs global_pool=token")
        dim = encoder.embed_dim
        self.model = encoder
        head_config = dict(head)
        if patch_objective != "distill":
            head_config["shared"] = True  # no patch prototypes to train
        self.head = IBOTHead(dim, **head_config)
        self.patch_objective = patch_objective
        self.masking = MaskGenerator(**masking)
        self.mask_token = nn.Parameter(torch.zeros(1, dim)) if patch_objective else None
        patch_h, patch_w = encoder.patch_embed.patch_size
        in_chans = encoder.patch_embed.proj.in_channels
        self.pixel_head = (
            nn.Linear(dim, patch_h * patch_w * in_chans) if patch_objective == "pixel" else None
        )
        # the momentum is the caller's schedule, given at every update_teacher
        self.teacher = ModelEma(self.student(), 0.0, average_buffers=False)
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

    def student(self) -> nn.ModuleDict:
        """The trained networks as the teacher mirrors them (built on the fly: registered once,
        under ``model`` and ``head``, their checkpoint keys stay the loaders')."""
        return nn.ModuleDict({"backbone": self.model, "head": self.head})

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter."""
        self.teacher.decay = momentum
        self.teacher.update(self.student())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's class token after its final norm: the encoder the release scores by
        k-NN and transfers (its evaluations' ``checkpoint_key=teacher``)."""
        encoder = self.teacher.module.backbone
        return encoder.forward_head(encoder.forward_features(images), pre_logits=True)

    @staticmethod
    def split_views(views: Sequence[torch.Tensor]) -> tuple[list, list]:
        """Global views (those of the first view's size), then the local ones."""
        if isinstance(views, torch.Tensor):
            raise UserError(
                "task=ibot trains on multi-crop views: set data.multi_crop (the ibot experiments "
                "do, e.g. experiment=digits_ibot)"
            )
        size = views[0].shape[-2:]
        num_global = next((i for i, v in enumerate(views) if v.shape[-2:] != size), len(views))
        return list(views[:num_global]), list(views[num_global:])

    def draw_masks(
        self, global_views: Sequence[torch.Tensor], rng: random.Random | None = None
    ) -> list[torch.Tensor] | None:
        """One (B, N) mask per global view (None without a patch objective)."""
        if self.patch_objective is None:
            return None
        grid = self.model.patch_embed.grid_size
        return [
            self.masking(len(v), grid, rng).to(v.device, non_blocking=True) for v in global_views
        ]

    def patch_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, C * patch_h * patch_w): each patch's pixels."""
        patch = self.model.patch_embed.patch_size
        return F.unfold(images, patch, stride=patch).transpose(1, 2)

    def forward(
        self,
        views: Sequence[torch.Tensor],
        cls_temp: float,
        patch_temp: float,
        masks: Sequence[torch.Tensor] | None = None,
        same_view: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The losses of a batch of multi-crop ``views`` (global views first): ``loss`` (the
        weighted sum), ``cls``, ``patch``; and the teacher's collapse diagnostics on the global
        views' class token (``teacher_entropy``, ``teacher_mean_entropy``, ``feature_cosine``).

        The teacher sees the global views unmasked; the student sees them with ``mask_token``
        where ``masks`` (drawn when not given) are True, and the local views, all in one batch,
        unmasked. In training mode the centers move toward this batch's teacher outputs.
        ``same_view`` (validation, one view): the class token is distilled from the teacher's
        output for the same view."""
        global_views, local_views = self.split_views(views)
        if masks is None:
            masks = self.draw_masks(global_views)
        num = len(global_views)
        images = torch.cat(global_views)
        mask = torch.cat(list(masks)) if masks is not None else None
        with torch.no_grad():
            teacher_tokens = encode(self.teacher.module.backbone, images)
            teacher_cls, teacher_patch = self.teacher.module.head(teacher_tokens)
            targets = self.loss.target(teacher_cls, cls_temp)
            diagnostics = {
                "teacher_entropy": target_entropy(targets),
                "teacher_mean_entropy": mean_target_entropy(targets),
                "feature_cosine": feature_cosine(teacher_tokens[:, 0]),
            }
        tokens = encode(self.model, images, mask, self.mask_token)
        student_cls, student_patch = self.head(tokens)
        zero = tokens.new_zeros(())
        cls_loss, patch_loss = zero, zero
        if self.loss.lambda_cls > 0:
            if same_view:
                cls_loss = self.loss.cross_entropy(student_cls, teacher_cls, cls_temp).mean()
            else:
                local_cls = (
                    self.head.forward_cls(encode(self.model, torch.cat(local_views))).chunk(
                        len(local_views)
                    )
                    if local_views
                    else ()
                )
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
        return {"loss": loss, "cls": cls_loss, "patch": patch_loss} | diagnostics
