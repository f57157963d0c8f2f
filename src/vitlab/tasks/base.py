"""What every vitlab task shares: the optimizer recipe, scaled lr and the per-step schedule."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from vitlab.optim import WarmupCosine, effective_batch_size, param_groups, scaled_lr


class RecipeTask(L.LightningModule):
    """Base for tasks: ``optimizer`` is a partial (e.g. ``torch.optim.AdamW``) whose ``lr`` is the
    base lr for a batch of 256 and whose ``weight_decay`` applies to weight matrices only.

    The peak lr is scaled by the effective batch (per-device batch x devices x nodes x
    accumulation), warmed up linearly for ``warmup_epochs`` and decayed by a cosine to
    ``min_lr``, every optimizer step.
    """

    def __init__(
        self,
        optimizer: Callable[..., Optimizer],
        warmup_epochs: float = 0.0,
        min_lr: float = 0.0,
        layer_decay: float | None = None,
    ):
        super().__init__()
        self.optimizer_factory = optimizer
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.layer_decay = layer_decay

    def trained_module(self) -> nn.Module:
        """The module whose parameters the optimizer updates."""
        raise NotImplementedError

    def per_device_batch_size(self) -> int:
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "batch_size"):
            return int(datamodule.batch_size)
        return int(self.trainer.train_dataloader.batch_size)

    def configure_optimizers(self) -> dict:
        trainer = self.trainer
        batch = effective_batch_size(
            self.per_device_batch_size(),
            trainer.num_devices,
            trainer.num_nodes,
            trainer.accumulate_grad_batches,
        )
        keywords = getattr(self.optimizer_factory, "keywords", {})
        base_lr = keywords.get("lr", 1e-3)
        lr = scaled_lr(base_lr, batch)
        groups = param_groups(
            self.trained_module(), keywords.get("weight_decay", 0.0), self.layer_decay
        )
        for group in groups:
            group["lr"] = lr * group["lr_scale"]
        optimizer = self.optimizer_factory(groups, lr=lr)
        total_steps = max(1, int(trainer.estimated_stepping_batches))
        steps_per_epoch = total_steps / max(1, trainer.max_epochs or 1)
        warmup_steps = min(total_steps, round(self.warmup_epochs * steps_per_epoch))
        rank_zero_info(
            f"effective batch {batch} = {self.per_device_batch_size()} per device x "
            f"{trainer.num_devices} device(s) x {trainer.num_nodes} node(s) x "
            f"{trainer.accumulate_grad_batches} accumulation; lr {lr:.3g} = base {base_lr:.3g} "
            f"x {batch}/256; {total_steps} steps, {warmup_steps} warmup"
        )
        schedule = WarmupCosine(warmup_steps, total_steps, min_ratio=min(1.0, self.min_lr / lr))
        scheduler = LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
