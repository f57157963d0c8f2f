"""Per-step time of vitlab's Lightning training step over a raw PyTorch loop (lower is better).

The Lightning side is train.py's own config (composed with Hydra): the ClassificationTask and
Trainer it builds, with logging on (CSV logger + learning-rate monitor, every
``trainer.log_every_n_steps``), train accuracy metrics and gradient clipping as configured, and
the progress bar, checkpointing and model summary off. The raw loop trains the same model on the
same in-memory batches with the same optimizer groups, scaled lr, per-step schedule, loss and
clipping, and reads the loss back as often as Lightning logs it. Rounds alternate between the
two and the median step time (after warm-up steps, excluding fit set-up) is compared: the
median of single steps shrugs off bursts of load from other processes.

    python benchmarks/lightning_overhead.py                 # train.py's default: digits ViT
    python benchmarks/lightning_overhead.py --model vit_ti --img-size 32 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, TensorDataset

import vitlab.config  # noqa: F401  (registers the resolvers the config groups use)
from vitlab.cli import CONFIG_PATH
from vitlab.optim import WarmupCosine, param_groups, scaled_lr
from vitlab.tasks.base import build_task, fused_adam

ROOT = Path(__file__).resolve().parents[1]


class StepClock(L.Callback):
    """Wall-clock time at the start of every training batch and at the end of the last."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


class InMemoryData(L.LightningDataModule):
    """The raw loop's DataLoader, handed to the Trainer the way train.py hands data over."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__()
        self.loader = loader
        self.batch_size = loader.batch_size

    def train_dataloader(self) -> DataLoader:
        return self.loader


def step_seconds(starts: list[float], end: float, warmup: int) -> list[float]:
    """Seconds of every step after the first ``warmup``, start to start (the last: to its end)."""
    bounds = [*starts[warmup:], end]
    return [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]


def train_config(args: argparse.Namespace, out_dir: str) -> DictConfig:
    overrides = [
        f"paths.root_dir={ROOT}",
        f"paths.output_dir={out_dir}",
        "logger=csv",
        *args.overrides,
    ]
    if args.model:
        overrides.append(f"model={args.model}")
    if args.img_size:
        overrides.append(f"model.img_size={args.img_size}")
    with initialize_config_dir(CONFIG_PATH, version_base=None):
        return compose("train", overrides=overrides)


def lightning_steps(task, cfg: DictConfig, loader: DataLoader, out_dir: str) -> StepClock:
    clock = StepClock()
    trainer = instantiate(
        cfg.trainer,
        accelerator="cpu",
        precision="32-true",
        max_epochs=1,
        callbacks=[clock, LearningRateMonitor(logging_interval="step")],
        logger=CSVLogger(out_dir, name="csv"),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=InMemoryData(loader))
    return clock


def raw_steps(
    task, cfg: DictConfig, loader: DataLoader, metrics: bool = False
) -> tuple[list[float], float]:
    """The same step by hand: groups, scaled lr, fused AdamW, warmup + cosine per step, loss,
    clipping; with ``metrics`` also the task's train accuracy metrics, as its training_step
    does."""
    model = task.model
    model.train()
    optimizer_cfg = cfg.task.optimizer
    lr = scaled_lr(optimizer_cfg.lr, loader.batch_size)
    groups = param_groups(model, optimizer_cfg.weight_decay, cfg.task.layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    factory = instantiate(optimizer_cfg)
    optimizer = factory(groups, lr=lr, **fused_adam(factory, groups))
    total = len(loader)
    warmup = min(total, round(cfg.task.warmup_epochs * total))
    min_ratio = min(1.0, cfg.task.min_lr / lr)
    scheduler = LambdaLR(optimizer, WarmupCosine(warmup, total, min_ratio=min_ratio))
    clip = cfg.trainer.get("gradient_clip_val")
    log_every = cfg.trainer.log_every_n_steps
    starts, logged = [], []
    for step, (images, targets) in enumerate(loader):
        starts.append(time.perf_counter())
        logits = model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=task.label_smoothing)
        if metrics:
            task.track_train_accuracy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        if (step + 1) % log_every == 0:
            logged.append((loss.item(), scheduler.get_last_lr()[0]))
    return starts, time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="conf/model option (default: train.py's)")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the data config's")
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides of train.py's config")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")

    out_dir = tempfile.mkdtemp(prefix="lightning_overhead_")
    cfg = train_config(args, out_dir)
    threads = args.threads or cfg.get("num_threads")
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(cfg.seed or 0, verbose=False)
    batch = args.batch_size or cfg.data.batch_size
    task = build_task(cfg.task)
    model = cfg.model
    shape = (model.in_chans, model.img_size, model.img_size)
    images = torch.randn(args.steps * batch, *shape)
    labels = torch.randint(0, model.num_classes, (args.steps * batch,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=True)

    times: dict[str, list[float]] = {"lightning": [], "raw": [], "raw+metrics": []}
    for round_index in range(args.rounds):
        names = list(times) if round_index % 2 == 0 else list(reversed(times))
        for name in names:
            if name == "lightning":
                clock = lightning_steps(task, cfg, loader, out_dir)
                starts, end = clock.starts, clock.end
            else:
                starts, end = raw_steps(task, cfg, loader, metrics=name == "raw+metrics")
            times[name].extend(step_seconds(starts, end, args.warmup))
        task.train_acc1.reset()
    lightning_s, raw_s, metrics_s = (statistics.median(times[name]) for name in times)
    params = sum(p.numel() for p in task.model.parameters())
    print(
        f"{cfg.model.get('embed_dim')}-wide x {cfg.model.depth} ViT ({params / 1e6:.2f}M params), "
        f"{shape[1]}px, batch {batch}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds x {args.steps - args.warmup} timed steps"
    )
    print(
        f"per step: lightning {lightning_s * 1e3:.2f} ms, raw loop {raw_s * 1e3:.2f} ms, "
        f"raw loop + train accuracy metrics {metrics_s * 1e3:.2f} ms "
        f"(lightning / that: {lightning_s / metrics_s:.3f})"
    )
    overhead = lightning_s / raw_s - 1
    print(f"ratio lightning/raw: {lightning_s / raw_s:.3f}  overhead {overhead:+.1%} (goal <= 3%)")


if __name__ == "__main__":
    main()
