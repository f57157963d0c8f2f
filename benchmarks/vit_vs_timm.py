"""Throughput of vitlab's VisionTransformer over timm's at the same config (higher is better).

Both models get the same weights (timm's state dict loads into ours unchanged) and the same
inputs; for each config the script times a training step (forward + backward + fused AdamW) and an
inference forward of each model in alternation, round after round, so that noise from other
processes hits both equally, and prints the median images/s and their ratio (ours / timm).

Below each ratio it prints the model FLOP utilisation (MFU) of each: the FLOPs of one step of
timm's model, counted once on the meta device (forward and backward for train, forward for
infer), over the median step time and the device's peak FLOP/s for the dtype. Both models are
credited timm's count: our last block updates only the class token (the one token the classifier
reads), so it does less work for the same result, and that saving shows as a higher MFU. The
peak is Lightning's figure for the GPU (``get_available_flops``) or ``--peak-tflops``; without
either (a CPU, or a chip Lightning's table does not name) MFU is n/a. On CUDA it also prints
each model's peak step memory: what its warm-up steps, run alone, allocated at most beyond what
was allocated before them (activations, gradients and optimizer state; weights and inputs not).

Defaults finish in about a minute on a 2-core CPU:

    python benchmarks/vit_vs_timm.py                                  # ViT-Ti/16, batch 8
    python benchmarks/vit_vs_timm.py --model vit_ti vit_s vit_b --threads 2 --rounds 7
    python benchmarks/vit_vs_timm.py --device cuda --dtype bfloat16 --batch-size 128 \\
        --model vit_s vit_b vit_l [--compile] [--peak-tflops 989.4]

``benchmarks/cuda.sh`` runs the GPU measurements of the README.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from device_timing import add_timing_arguments, is_cuda, seconds_per_step, warm_up
from lightning.fabric.utilities.throughput import get_available_flops, measure_flops
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

from vitlab.models.vit import VisionTransformer

CONFIGS = {
    "vit_ti": dict(embed_dim=192, depth=12, num_heads=3, patch_size=16),
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6, patch_size=16),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NUM_CLASSES = 1000


@dataclass
class Measurement:
    seconds: float  # median seconds per step
    peak_gib: float | None  # peak memory of a step beyond what was allocated before (CUDA only)


def model_config(name: str, img_size: int) -> dict:
    return dict(img_size=img_size, num_classes=NUM_CLASSES, **CONFIGS[name])


def build_pair(name: str, img_size: int, device: str) -> tuple[nn.Module, nn.Module]:
    """timm's ViT and ours with timm's weights loaded into ours, both built on ``device``."""
    with torch.device(device):
        timm_model = TimmViT(**model_config(name, img_size))
        ours = VisionTransformer(**model_config(name, img_size))
    ours.load_state_dict(timm_model.state_dict(), strict=True)
    return ours, timm_model


def step_flops(name: str, mode: str, img_size: int, batch_size: int) -> int:
    """FLOPs of one step of timm's model, counted on a copy on the meta device (no weights,
    nothing computed): forward and backward of the loss for train, the forward for infer."""
    with torch.device("meta"):
        model = TimmViT(**model_config(name, img_size))
        images = torch.empty(batch_size, 3, img_size, img_size)
        labels = torch.zeros(batch_size, dtype=torch.long)
    if mode == "infer":
        model.eval()
        with torch.no_grad():
            return measure_flops(model, lambda: model(images))
    return measure_flops(
        model, lambda: model(images), loss_fn=lambda logits: F.cross_entropy(logits, labels)
    )


def peak_flops(
    device: str, dtype: torch.dtype, override_tflops: float | None
) -> tuple[float | None, str]:
    """The peak FLOP/s that MFU divides by, and where it came from (or why there is none)."""
    if override_tflops is not None:
        return override_tflops * 1e12, f"{override_tflops:g} TFLOP/s (--peak-tflops)"
    target, dtype_name = torch.device(device), str(dtype).removeprefix("torch.")
    name = torch.cuda.get_device_name(target) if target.type == "cuda" else target.type
    with warnings.catch_warnings():  # Lightning warns of an unknown chip; we say it below
        warnings.simplefilter("ignore")
        available = get_available_flops(target, dtype)
    if available is None:
        return None, (
            f"Lightning's get_available_flops has no peak for {name!r} at {dtype_name}; "
            "pass --peak-tflops"
        )
    source = f"{available / 1e12:g} TFLOP/s (Lightning's for {name!r}, {dtype_name})"
    return float(available), source


def make_step(
    model: nn.Module,
    mode: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast: torch.autocast,
) -> Callable[[], None]:
    if mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast:
                model(images)

        return infer

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return train


def compare(
    steps: dict[str, Callable[[], None]], args: argparse.Namespace
) -> dict[str, Measurement]:
    """Median seconds per step of each contender, measured alternately (order flips per round),
    after each one's warm-up steps run alone (which gives its peak step memory)."""
    names = list(steps)
    peaks = {name: warm_up(steps[name], args.warmup, args.device) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(seconds_per_step(steps[name], args.steps, args.device))
    return {name: Measurement(statistics.median(times[name]), peaks[name]) for name in names}


def flops_text(flops: float) -> str:
    return f"{flops / 1e12:.3g} TFLOP" if flops >= 1e12 else f"{flops / 1e9:.3g} GFLOP"


def details(results: dict[str, Measurement], flops: int, peak: float | None) -> str:
    """The line under a ratio: each one's MFU (timm's FLOPs credited to both) and peak memory."""
    parts = [f"{flops_text(flops)} a step (timm's count)"]
    if peak is None:
        parts.append("MFU n/a")
    else:
        mfu = ", ".join(f"{k} {flops / r.seconds / peak:.1%}" for k, r in results.items())
        parts.append(f"MFU {mfu}")
    if all(r.peak_gib is not None for r in results.values()):
        memory = ", ".join(f"{k} {r.peak_gib:.2f} GiB" for k, r in results.items())
        parts.append(f"peak step memory {memory}")
    return "    " + "; ".join(parts)


def measure(
    name: str, mode: str, args: argparse.Namespace, autocast: torch.autocast, peak: float | None
) -> None:
    """Prints the img/s of both models at one config and mode, their ratio, MFU and memory."""
    torch.manual_seed(args.seed)
    ours, timm_model = build_pair(name, args.img_size, args.device)
    if args.compile:
        ours.compile()
        timm_model.compile()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=args.device)
    steps = {
        "vitlab": make_step(ours, mode, images, labels, autocast),
        "timm": make_step(timm_model, mode, images, labels, autocast),
    }
    results = compare(steps, args)
    rate = {key: args.batch_size / r.seconds for key, r in results.items()}
    print(
        f"{name}/16 {mode:5s}: vitlab {rate['vitlab']:8.1f} img/s, "
        f"timm {rate['timm']:8.1f} img/s, ratio vitlab/timm {rate['vitlab'] / rate['timm']:.3f}"
    )
    print(details(results, step_flops(name, mode, args.img_size, args.batch_size), peak))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", choices=list(CONFIGS), default=["vit_ti"])
    parser.add_argument("--mode", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; median taken")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="autocast dtype (float32: no autocast)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="nn.Module.compile() both models")
    add_timing_arguments(parser, batch_size=8, warmup=2)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s at --dtype for MFU (default: Lightning's figure)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if is_cuda(args.device):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = DTYPES[args.dtype]
    device_type = torch.device(args.device).type
    autocast = torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, dtype {args.dtype}, "
        f"batch {args.batch_size}, {args.img_size}px, compile {args.compile}, "
        f"{args.rounds} rounds x {args.steps} steps, torch {torch.__version__}"
    )
    peak, source = peak_flops(args.device, dtype, args.peak_tflops)
    print(f"peak for MFU: {source}" if peak is not None else f"MFU n/a: {source}")
    for name in args.model:
        for mode in args.mode:
            measure(name, mode, args, autocast, peak)
            gc.collect()  # the pair's weights, gradients and optimizer state
            if is_cuda(args.device):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
