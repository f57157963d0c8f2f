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
  view, centers all-reduced across processes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from vitlab.models.vit import VisionTransformer, init_linear_and_norm

# the release's pred_aspect_ratio (main_ibot.py passes (0.3, 1 / 0.3))
ASPECT_RATIO = (0.3, 1 / 0.3)
# BEiT's masking generator: up to 10 tries per block
BLOCK_ATTEMPTS = 10


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
    it and never exceeds it."""
    height, width = grid
    mask = torch.zeros(height, width, dtype=torch.bool)
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
                    block.fill_(True)
                    delta += added
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask


class MaskGenerator:
    """Per-image masks of a batch of views: each image draws its ratio as the release's
    ``get_pred_ratio`` (one of ``ratios``, each ``r +- var`` uniform), then a block (or
    uniformly random) mask of that ratio.

    The iBOT recipe, ``ratios=[0, 0.3]`` and ``ratio_vars=[0, 0.2]``, leaves half the images
    unmasked and masks the other half at a ratio uniform in [0.1, 0.5].
    """

    def __init__(
        self,
        ratios: Sequence[float] = (0.0, 0.3),
        ratio_vars: Sequence[float] = (0.0, 0.2),
        shape: str = "block",
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
                mask = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
                mask[rng.sample(range(len(mask)), count)] = True
                masks.append(mask)
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
    return vit.norm(vit.blocks(vit.prepare_tokens(images, mask, mask_token)))


class IBOTHead(nn.Module):
    """The release's ``iBOTHead``: Linear-GELU layers (``num_layers`` - 1 of width
    ``hidden_dim``) to a ``bottleneck_dim`` projection, l2-normalised, then ``last_layer``: a
    weight-normalised Linear without bias onto ``out_dim`` prototypes, its norm fixed at 1 with
    ``norm_last_layer``. The class token goes through ``last_layer``, the patch tokens through
    the same layer (``shared``) or their own ``last_layer2`` (``patch_out_dim`` prototypes).
    ``norm="bn"`` puts a BatchNorm after each hidden Linear (the release's ``--norm_in_head
    bn``; statistics over every token of the batch; ``trainer.sync_batchnorm`` under DDP).

    Checkpoint names follow the release's (``mlp.N``, ``last_layer``); the weight norm is torch's
    parametrization (``last_layer.parametrizations.weight.original0`` is the release's
    ``weight_g``, ``original1`` its ``weight_v``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 8192,
        patch_out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        shared: bool = True,
        norm: Literal["bn"] | None = None,
    ):
        super().__init__()
        if norm not in ("bn", None):
            raise ValueError(f"head norm must be 'bn' or null, got {norm!r}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            batch_norm = [nn.BatchNorm1d(fan_out)] if norm == "bn" else []
            layers += [nn.Linear(fan_in, fan_out), *batch_norm, nn.GELU()]
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

    def forward_cls(self, cls: torch.Tensor) -> torch.Tensor:
        """(B, D) class tokens -> (B, out_dim): the head of the local crops (no patch output)."""
        return self.last_layer(F.normalize(self.project(cls), dim=-1, p=2))

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
    every call with momentum ``center_momentum`` (0.9) from the batch mean of the teacher
    outputs (patch center: over the mean of each image's patch outputs), summed over every
    process.
    """

    def __init__(
        self,
        out_dim: int,
        patch_out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        patch_center_momentum: float = 0.9,
        lambda_cls: float = 1.0,
        lambda_patch: float = 1.0,
    ):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.patch_center_momentum = patch_center_momentum
        self.lambda_cls, self.lambda_patch = lambda_cls, lambda_patch
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("patch_center", torch.zeros(1, 1, patch_out_dim))

    def cross_entropy(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        temp: float,
        center: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``-sum(softmax((teacher - center) / temp) * log_softmax(student / student_temp))``
        over the last dimension (the class center unless another is given)."""
        center = self.center if center is None else center
        target = F.softmax((teacher - center) / temp, dim=-1).detach()
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
