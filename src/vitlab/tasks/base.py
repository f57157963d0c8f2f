"""What every vitlab task shares: built from configs, the optimizer recipe, scaled lr, the
warmup + cosine schedule, the monitored metric and the FLOPs of a training step."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from vitlab.checkpoint_file import RUN_CONFIG_KEY
from vitlab.compat import should_update_logs
from vitlab.errors import UserError
from vitlab.optim import WarmupCosine, WarmupPoly, effective_batch_size, param_groups, scaled_lr
from vitlab.tasks.nonfinite import NonFiniteWatch, Place
from vitlab.weights import check_fits, load_weights

log = logging.getLogger(__name__)

# device types with torch's fused Adam(W) kernels that vitlab trains on
FUSED_ADAM_DEVICES = ("cpu", "cuda")
Config = Mapping[str, Any]
ScheduleInterval = Literal["step", "epoch"]
Decay = Literal["cosine", "poly"]


def build_task(task_config: Config) -> RecipeTask:
    """A task from its config group: the task receives its ``model`` and ``optimizer`` as configs
    (plain containers) and builds them itself, so that its hyperparameters are those configs and
    ``<Task>.load_from_checkpoint(path)`` rebuilds it."""
    return instantiate(task_config, _recursive_=False, _convert_="all")


class RecipeTask(L.LightningModule):
    """Base for tasks: ``optimizer`` is the config of a partial (e.g. ``torch.optim.AdamW``) whose
    ``lr`` is the base lr for a batch of 256 and whose ``weight_decay`` applies to weight matrices
    only.

    The peak lr is scaled by the effective batch (per-device batch x devices x nodes x
    accumulation), warmed up linearly from ``warmup_lr`` for ``warmup_epochs`` and decayed by a
    cosine to ``min_lr`` (both absolute lrs). ``schedule_interval`` says how: ``step`` updates it
    every optimizer step, the cosine starting after the warmup (the MAE release's schedule);
    ``epoch`` once per epoch, the cosine spanning every epoch with the warmup in place of its
    start (timm's ``CosineLRScheduler`` as DeiT uses it). Each parameter group's lr is its layer
    decay scale times that schedule, warmup and floor included, as in the MAE release.

    ``pretrained`` names initial weights (a file, ``timm:``/``hf-hub:`` names or a W&B artifact:
    ``vitlab.weights``) for the module that ``pretrained_target`` names (the classifier's ViT, a
    segmenter's or detector's backbone): they are loaded when fitting starts (``setup``), so
    evaluating or resuming never needs them again, and a resumed run restores its own weights.

    ``monitor`` is the validation metric that picks the best checkpoint (and stops early, and
    scores sweeps) and ``mode`` says whether higher (``max``) or lower (``min``) is better.
    ``skip_nonfinite`` skips steps whose loss is NaN or infinite instead of stopping.
    ``compile`` compiles the trained module in place (``nn.Module.compile``), so checkpoint keys
    stay those of the plain model (no ``_orig_mod.``). Adam(W) runs fused (one kernel for all
    parameters) on CPU and CUDA.

    A task subclass declares its own arguments (its model, its ``monitor`` and ``mode``) and
    passes these schedule arguments through as ``**recipe``, so a recipe argument is added here
    only. The constructor arguments are the task's hyperparameters (``self.hparams``); the run config
    that train.py composed travels in every checkpoint too, under ``RUN_CONFIG_KEY``, once
    ``run_config`` is set.
    """

    # what predict.py makes of ``predict_outputs``: "classes", "masks" or "boxes"; None: nothing
    prediction: ClassVar[str | None] = None
    # messages (regexes) of warnings the task's design makes expected, hidden while it fits
    expected_warnings: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        optimizer: Config,
        warmup_epochs: float,
        min_lr: float,
        warmup_lr: float,
        schedule_interval: ScheduleInterval,
        skip_nonfinite: bool,
        monitor: str,
        mode: Literal["min", "max"],
        # switches a task's group may leave out: off
        layer_decay: float | None = None,
        decay: Decay = "cosine",
        poly_power: float | None = None,
        lr_mult: Mapping[str, float] | None = None,
        compile: bool = False,
        # the weights fitting starts from (vitlab.weights); None: a random init
        pretrained: str | None = None,
    ):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if schedule_interval not in ("step", "epoch"):
            raise ValueError(
                f"schedule_interval must be 'step' or 'epoch', got {schedule_interval!r}"
            )
        if decay not in ("cosine", "poly"):
            raise ValueError(f"decay must be 'cosine' or 'poly', got {decay!r}")
        if decay == "poly" and poly_power is None:
            raise ValueError("poly_power: decay='poly' needs a power")
        self.save_hyperparameters(logger=False)
        self.optimizer_factory: Callable[..., Optimizer] = instantiate(optimizer, _convert_="all")
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.warmup_lr = warmup_lr
        self.schedule_interval = schedule_interval
        self.layer_decay = layer_decay
        self.decay = decay
        self.poly_power = poly_power
        self.lr_mult = dict(lr_mult or {})
        self.compile_model = compile
        self.skip_nonfinite = skip_nonfinite
        self.pretrained = pretrained
        self.monitor = monitor
        self.mode = mode
        self.run_config: dict[str, Any] | None = None
        self._compiled = False
        self.nonfinite = NonFiniteWatch()
        # the training values shown on the progress bar, read at logging steps (``log_step``)
        self.progress_bar_values: dict[str, float] = {}

    def val_metric_names(self) -> list[str]:
        """The names this task logs after each validation (what ``monitor`` may name)."""
        raise NotImplementedError

    def trained_module(self) -> nn.Module:
        """The module whose parameters the optimizer updates."""
        raise NotImplementedError

    def pretrained_target(self) -> nn.Module | None:
        """The ``VisionTransformer`` that ``pretrained`` weights load into; None: this task takes
        none."""
        return None

    def check_pretrained(self) -> None:
        """Before any work: a ``UserError`` when ``pretrained`` is set on a task that takes no
        weights or names a checkpoint file that does not fit its target, checked on a copy of
        this task on the meta device (no weights, nothing loaded)."""
        if self.pretrained is None:
            return
        self.weights_target()
        with torch.device("meta"):
            target = type(self)(**self.hparams).pretrained_target()
        check_fits(target, self.pretrained)

    def setup(self, stage: str) -> None:
        # a resumed run restores its own weights: the pretrained ones are not needed again
        if stage == "fit" and self.pretrained is not None and self.trainer.ckpt_path is None:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """``pretrained`` loaded into ``pretrained_target()``; a task that prepares more around
        the loaded weights (a fresh head) extends this."""
        load_weights(self.weights_target(), self.pretrained)

    def weights_target(self) -> nn.Module:
        """``pretrained_target()``; a ``UserError`` for a task that takes no weights."""
        target = self.pretrained_target()
        if target is None:
            raise UserError(f"task.pretrained: {type(self).__name__} loads no pretrained weights")
        return target

    def predict_outputs(self, images: torch.Tensor) -> Any:
        """What predict.py reports for a batch of preprocessed images, in the form its
        ``prediction`` names (the task in eval mode, without autograd)."""
        return self(images)

    def flops_forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """A scalar from ``model`` (this task's model, or its copy on the meta device) on a batch
        of ``images`` that back-propagates through what a training step computes."""
        return model(images).sum()

    def training_flops(self, images_shape: tuple[int, ...]) -> int:
        """FLOPs of one training step's forward and backward on a batch of ``images_shape``,
        counted on a copy of this task on the meta device (frozen parts frozen as here): no
        weights, nothing computed."""
        with torch.device("meta"):
            model = type(self)(**self.hparams).model
            images = torch.empty(images_shape)
            return measure_flops(
                model, lambda: self.flops_forward(model, images), loss_fn=lambda loss: loss
            )

    def set_input_shape(self, batch_shape: tuple[int, ...]) -> None:
        """The shape of the batches it will train on: a one-image example for the model summary,
        and the FLOPs of a training step for Lightning's ThroughputMonitor."""
        self.example_input_array = torch.zeros(1, *batch_shape[1:])
        self.flops_per_batch = self.training_flops(batch_shape)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stop_if_nonfinite()  # no checkpoint of weights trained on a non-finite loss
        if self.run_config is not None:
            checkpoint[RUN_CONFIG_KEY] = self.run_config

    def configure_model(self) -> None:
        if self.compile_model and not self._compiled:
            self.trained_module().compile()
            self._compiled = True

    def should_log_step(self) -> bool:
        """Whether this training step's values are written to the loggers (every
        ``trainer.log_every_n_steps``, and every step of a fast dev run or when called by hand)."""
        trainer = self._trainer
        return trainer is None or bool(trainer.fast_dev_run) or should_update_logs(trainer)

    def log_step(self, name: str, value: torch.Tensor, prog_bar: bool = False) -> None:
        """``self.log`` of a training step's value, called only on the steps whose values Lightning
        writes to the loggers (every ``trainer.log_every_n_steps``): the logs are the same.

        Each ``self.log`` call is bookkeeping that a small model's step notices
        (``benchmarks/lightning_overhead.py``), and it is only worth paying when the value is
        written. Lightning's own LearningRateMonitor and ThroughputMonitor ask the same question
        of the trainer.

        A ``prog_bar`` value goes to ``progress_bar_values`` as a number read on this step, which
        vitlab's progress bar shows until the next logging step: a value given to Lightning's
        progress bar instead stays a device tensor that it reads on every later step.
        """
        if self.should_log_step():
            self.log(name, value)  # warns, as it should, when called by hand
            if prog_bar:
                self.progress_bar_values[name] = float(value.detach())

    def finite_or_stop(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        """The loss, checked for NaN or infinity. Non-finite, it stops the run naming the first
        bad step and batch, or, with ``skip_nonfinite``, skips this optimizer step (Lightning
        skips a None loss).

        Stopping needs no host read on this step: the loss is checked on the device
        (``NonFiniteWatch``) and the verdict read with the logged values, at the end of an epoch,
        before a checkpoint and when training ends; the steps in between may have trained on it,
        but nothing is saved from them. Skipping must know before this step's optimizer step, so
        it reads every step.

        Data-parallel ranks must step together, and Lightning cannot skip a step there: a rank
        with a non-finite loss returns a zero loss instead, so that its batch adds nothing to the
        averaged gradients of the step the other ranks take.
        """
        place = Place(self.global_step, self.current_epoch, batch_idx)
        if self.skip_nonfinite:
            if torch.isfinite(loss):
                return loss
            log.warning("non-finite loss %s at %s: this batch skipped", loss.item(), place)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return None
        self.nonfinite.record(loss, place)
        trainer = self._trainer
        if self.should_log_step() or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.stop_if_nonfinite()
        return loss

    def stop_if_nonfinite(self) -> None:
        """Reads the device's verdict on the losses since the last read; stops at a non-finite
        one, naming where it happened."""
        found = self.nonfinite.first_nonfinite()
        if found is not None:
            value, place = found
            raise FloatingPointError(
                f"non-finite loss {value} at {place}; lower the lr, enable "
                "trainer.gradient_clip_val, or set task.skip_nonfinite=true to skip such steps"
            )

    def on_train_end(self) -> None:
        self.stop_if_nonfinite()

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
            self.trained_module(),
            keywords.get("weight_decay", 0.0),
            self.layer_decay,
            self.lr_mult,
        )
        for group in groups:
            group["lr"] = lr * group["lr_scale"]
        # Lightning's mixed-precision plugin refuses to clip the gradients of an optimizer that
        # unscales them itself, as fused Adam does, bf16 included
        clipped_in_amp = trainer.gradient_clip_val and str(trainer.precision).endswith("-mixed")
        fused = {} if clipped_in_amp else fused_adam(self.optimizer_factory, groups)
        optimizer = self.optimizer_factory(groups, lr=lr, **fused)
        total_steps = max(1, int(trainer.estimated_stepping_batches))
        # an epoch's optimizer steps, whatever caps the run (max_epochs or max_steps); the train
        # loader must be set up to count them, which Lightning skips when max_epochs is -1
        trainer.fit_loop.setup_data()
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        schedule = self.lr_schedule(lr, total_steps, steps_per_epoch)
        interval = self.schedule_interval
        rank_zero_info(
            f"effective batch {batch} = {self.per_device_batch_size()} per device x "
            f"{trainer.num_devices} device(s) x {trainer.num_nodes} node(s) x "
            f"{trainer.accumulate_grad_batches} accumulation; lr {lr:.3g} = base {base_lr:.3g} "
            f"x {batch}/256; {schedule.total_steps} {interval}s, {schedule.warmup_steps:g} "
            f"warmup from {self.warmup_lr:.3g}, {self.decay} to {self.min_lr:.3g}"
        )
        all_warmup = self.warmup_epochs and schedule.warmup_steps >= schedule.total_steps
        if all_warmup and trainer.is_global_zero:
            log.warning(
                f"every {interval} of this run is warmup ({schedule.total_steps} {interval}s, "
                f"task.warmup_epochs={self.warmup_epochs:g}): the lr never reaches its peak "
                f"{lr:.3g} nor decays; train longer or lower task.warmup_epochs"
            )
        scheduler = LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "frequency": 1},
        }

    def lr_schedule(self, lr: float, total_steps: int, steps_per_epoch: int) -> WarmupCosine:
        """The multiplier of the peak ``lr`` at each scheduler step: every optimizer step of
        ``total_steps`` (warmup rounded to whole steps), or every epoch of the
        ``ceil(total_steps / steps_per_epoch)`` the run has.

        Epoch ``e`` trains at the schedule's value for ``e``, as timm's train.py steps its
        scheduler. DeiT's main.py lags one epoch behind it: it steps with the epoch just trained
        (``lr_scheduler.step(epoch)``), so its epochs 0 and 1 both train at the warmup lr, and a
        resumed run of it steps with its first epoch instead (no lag)."""
        min_ratio = min(1.0, self.min_lr / lr) if lr > 0 else 0.0
        start_ratio = min(1.0, self.warmup_lr / lr) if lr > 0 else 0.0
        shape = partial(WarmupPoly, power=self.poly_power) if self.decay == "poly" else WarmupCosine
        if self.schedule_interval == "epoch":
            epochs = math.ceil(total_steps / steps_per_epoch)
            warmup = min(epochs, self.warmup_epochs)
            return shape(warmup, epochs, min_ratio, start_ratio, warmup_prefix=False)
        warmup = min(total_steps, round(self.warmup_epochs * steps_per_epoch))
        return shape(warmup, total_steps, min_ratio, start_ratio, warmup_prefix=True)


def fused_adam(factory: Callable[..., Optimizer], groups: Iterable[dict]) -> dict:
    """``{"fused": True}`` for torch's Adam/AdamW when every parameter is a floating-point tensor
    on one CPU or CUDA device and the config chose no implementation (``fused``/``foreach``);
    ``{}`` otherwise. Unfused, torch steps a CPU model tensor by tensor
    (``benchmarks/vit_vs_timm.py`` measures both sides with the same optimizer)."""
    keywords = getattr(factory, "keywords", {})
    if getattr(factory, "func", factory) not in (torch.optim.Adam, torch.optim.AdamW):
        return {}
    if "fused" in keywords or "foreach" in keywords:
        return {}
    params = [p for group in groups for p in group["params"]]
    devices = {p.device for p in params}
    supported = len(devices) == 1 and next(iter(devices)).type in FUSED_ADAM_DEVICES
    return {"fused": True} if supported and all(p.is_floating_point() for p in params) else {}
