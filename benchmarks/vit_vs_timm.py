"""Throughput of vitlab's VisionTransformer over timm's at the same config (higher is better).

Both models get the same weights (timm's state dict loads into ours unchanged) and the same
inputs; for each config the script times a training step (forward + backward + fused AdamW) and an
inference forward of each model in alternation, round after round, so that noise from other
processes hits both equally, and prints the median images/s and their ratio (ours / timm).
Defaults finish in about a minute on a 2-core CPU:

    python benchmarks/vit_vs_timm.py                                  # ViT-Ti/16, batch 8
    python benchmarks/vit_vs_timm.py --model vit_ti vit_s vit_b --threads 2 --rounds 7
    python benchmarks/vit_vs_timm.py --device cuda --dtype bfloat16 --batch-size 128 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

from vitlab.models.vit import VisionTransformer

CONFIGS = {
    "vit_ti": dict(embed_dim=192, depth=12, num_heads=3, patch_size=16),
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6, patch_size=16),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_pair(name: str, img_size: int, device: str) -> tuple[nn.Module, nn.Module]:
    """timm's ViT and ours with timm's weights loaded into ours."""
    config = dict(img_size=img_size, num_classes=1000, **CONFIGS[name])
    timm_model = TimmViT(**config)
    ours = VisionTransformer(**config)
    ours.load_state_dict(timm_model.state_dict(), strict=True)
    return ours.to(device), timm_model.to(device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_step(
    model: nn.Module, mode: str, images: torch.Tensor, labels: torch.Tensor, autocast
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


def seconds_per_step(step: Callable[[], None], steps: int, device: str) -> float:
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def compare(steps: dict[str, Callable[[], None]], args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step of each contender, measured alternately (order flips per round)."""
    names = list(steps)
    for name in names:  # warm-up: allocator, kernels, compilation
        for _ in range(args.warmup):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(seconds_per_step(steps[name], args.steps, args.device))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", choices=sorted(CONFIGS), default=["vit_ti"])
    parser.add_argument("--mode", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; median taken")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="autocast dtype (float32: no autocast)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="nn.Module.compile() both models")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
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
    for name in args.model:
        for mode in args.mode:
            torch.manual_seed(args.seed)
            ours, timm_model = build_pair(name, args.img_size, args.device)
            if args.compile:
                ours.compile()
                timm_model.compile()
            images = torch.randn(
                args.batch_size, 3, args.img_size, args.img_size, device=args.device
            )
            labels = torch.randint(0, 1000, (args.batch_size,), device=args.device)
            steps = {
                "vitlab": make_step(ours, mode, images, labels, autocast),
                "timm": make_step(timm_model, mode, images, labels, autocast),
            }
            seconds = compare(steps, args)
            rate = {key: args.batch_size / value for key, value in seconds.items()}
            print(
                f"{name}/16 {mode:5s}: vitlab {rate['vitlab']:8.1f} img/s, "
                f"timm {rate['timm']:8.1f} img/s, ratio vitlab/timm {rate['vitlab'] / rate['timm']:.3f}"
            )
            del ours, timm_model, steps


if __name__ == "__main__":
    main()
