"""Optimisation recipe pieces: parameter groups, layer-wise lr decay, lr scaling, schedules
(warmup + cosine or polynomial decay), LARS."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

REFERENCE_BATCH = 256


def effective_batch_size(
    batch_size: int, devices: int = 1, num_nodes: int = 1, accumulate_grad_batches: int = 1
) -> int:
    """Samples per optimizer step across every process and accumulation step."""
    return batch_size * devices * num_nodes * accumulate_grad_batches


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """The linear scaling rule: lr = base_lr * effective_batch / 256."""
    return base_lr * effective_batch / REFERENCE_BATCH


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: embeddings 0, block i at i + 1, rest on top."""
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def encoder(model: nn.Module) -> tuple[str, nn.Module]:
    """The ViT inside ``model`` (the first module with ``blocks``) and its parameter-name
    prefix: ``""`` for a ViT or MAE itself, ``"backbone."`` for a segmenter."""
    for name, module in model.named_modules():
        if isinstance(getattr(module, "blocks", None), nn.Sequential | nn.ModuleList):
            return (f"{name}." if name else ""), module
    raise ValueError(f"layer decay needs a ViT with blocks inside {type(model).__name__}")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    lr_mult: Mapping[str, float] | None = None,
) -> list[dict]:
    """AdamW groups: no decay on biases, norms and tokens; optional layer-wise lr decay.

    Each group is named (``group_name``) and carries ``lr_scale`` (1.0 without layer decay); the optimizer's lr is multiplied
    by it, so layer ``i`` of ``L`` blocks gets ``lr * layer_decay ** (L + 1 - i)``. Depths are
    those of ``model``'s ViT (see ``encoder``); parameters outside it (a segmentation decoder)
    sit on top with the head. ``lr_mult`` multiplies the lr of the parameters whose names start
    with a key by its value (mmsegmentation's ``paramwise_cfg`` ``lr_mult``, e.g. SETR's
    ``{"decoder.": 10}``).
    """
    prefix, vit = encoder(model) if layer_decay is not None else ("", model)
    skip = getattr(model, "no_weight_decay", lambda: set())()
    num_layers = len(vit.blocks) if layer_decay is not None else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and name not in skip
        if layer_decay is None:
            depth = 0
        elif name.startswith(prefix):
            depth = layer_id(name.removeprefix(prefix), num_layers)
        else:
            depth = num_layers + 1
        mult = next((m for start, m in (lr_mult or {}).items() if name.startswith(start)), 1.0)
        key = (depth, decay, mult)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - depth) if layer_decay is not None else 1.0
            groups[key] = {
                "name": group_name(depth if layer_decay is not None else None, decay, mult),
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": scale * mult,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


def group_name(depth: int | None, decay: bool, lr_mult: float) -> str:
    """A parameter group's name, as the lr monitor's charts show it (``lr-AdamW/<name>``):
    ``decay`` / ``no_decay``, after ``layer_<depth>_`` with layer-wise lr decay and before
    ``_x<lr_mult>`` with an lr multiplier."""
    name = "decay" if decay else "no_decay"
    if depth is not None:
        name = f"layer_{depth}_{name}"
    return name if lr_mult == 1.0 else f"{name}_x{lr_mult:g}"


@dataclass
class WarmupCosine:
    """lr multiplier at scheduler step ``step`` (an optimizer step or an epoch): a linear warmup
    from ``start_ratio`` over ``warmup_steps``, then a half-cycle cosine down to ``min_ratio``,
    reached at ``total_steps`` and kept after.

    ``warmup_prefix`` places the cosine as the parameter of that name of timm's
    ``CosineLRScheduler`` does:

    - ``True``: the cosine starts where the warmup ends and spans the rest: the MAE release's
      per-iteration ``util/lr_sched.py`` ``adjust_learning_rate`` (warmup from 0 at step 0);
    - ``False``: the cosine spans ``[0, total_steps)`` and the warmup takes the place of its
      start, so the peak is never quite reached: timm's default, with which DeiT's ``main.py``
      builds its per-epoch schedule (``create_scheduler``).

    ``warmup_endpoint`` ends the warmup at the peak on its last step, as
    ``np.linspace(start, peak, warmup_steps)`` does (DINO's and iBOT's ``cosine_scheduler``),
    one step before the peak of the default warmup.

    A plain picklable callable for ``LambdaLR``, so scheduler state resumes exactly.
    """

    warmup_steps: float
    total_steps: int
    min_ratio: float = 0.0
    start_ratio: float = 0.0
    warmup_prefix: bool = True
    warmup_endpoint: bool = False

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            span = self.warmup_steps - 1 if self.warmup_endpoint else self.warmup_steps
            return self.start_ratio + (1 - self.start_ratio) * (step / span if span > 0 else 0.0)
        start = self.warmup_steps if self.warmup_prefix else 0
        progress = min(1.0, (step - start) / max(1, self.total_steps - start))
        return self.min_ratio + (1 - self.min_ratio) * self.decay(progress)

    def decay(self, progress: float) -> float:
        """From 1 at ``progress`` 0 to 0 at 1: a half cosine."""
        return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class WarmupPoly(WarmupCosine):
    """``WarmupCosine`` with a polynomial decay ``(1 - progress) ** power`` in place of the
    cosine: mmsegmentation's ``PolyLR`` (``eta_min`` = ``min_ratio`` x lr), with which SETR and
    Segmenter train (power 0.9, per iteration, no warmup)."""

    power: float = 0.9

    def decay(self, progress: float) -> float:
        return (1 - progress) ** self.power


class LARS(Optimizer):
    """LARS (You et al., 2017) as the MAE release's linear probing uses it (``util/lars.py``):
    SGD with momentum whose update of every weight matrix is scaled by the trust ratio
    ``trust_coefficient * ||w|| / ||g + weight_decay * w||``. Biases and norm parameters (one
    dimension) get the plain momentum update, without weight decay."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ):
        defaults = dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if param.ndim > 1:
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.norm(param), torch.linalg.norm(update)
                    ratio = group["trust_coefficient"] * param_norm / update_norm
                    usable = (param_norm > 0) & (update_norm > 0)
                    update = update.mul(torch.where(usable, ratio, torch.ones_like(ratio)))
                velocity = self.state[param].setdefault("mu", torch.zeros_like(param))
                velocity.mul_(group["momentum"]).add_(update)
                param.add_(velocity, alpha=-group["lr"])
        return loss
