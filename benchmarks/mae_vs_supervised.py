"""Time of one MAE pretraining step over one supervised step of the same ViT (lower is better).

Both steps are forward + backward + AdamW (fused, as vitlab trains) on the same encoder,
measured in the same process on the same inputs; MAE's encoder runs on the visible 25% of the
patches and its decoder (512 wide, 8 deep by default) on all of them. Defaults finish in under 2
minutes on a CPU:

    python benchmarks/mae_vs_supervised.py                      # ViT-B/16, batch 4, 3 steps
    python benchmarks/mae_vs_supervised.py --batch-size 64 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.models.vit import VisionTransformer

ENCODERS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
}


def timed(step: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def median_step_seconds(
    steps: dict[str, Callable[[], None]], repeats: int, warmup: int, device: str
) -> dict[str, float]:
    """Median wall time of each step, run in alternation so that load from other processes
    on a shared machine weighs on every step alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(warmup + repeats):
        for name, step in steps.items():
            seconds = timed(step, device)
            if index >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ENCODERS), default="vit_b")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--decoder-depth", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    encoder = ENCODERS[args.model]
    images = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda")

    supervised = VisionTransformer(img_size=224, num_classes=1000, **encoder).to(args.device)
    mae = MaskedAutoencoderViT(
        VisionTransformer(img_size=224, pos_embed="sincos", **encoder),
        mask_ratio=args.mask_ratio,
        decoder_depth=args.decoder_depth,
    ).to(args.device)

    def supervised_loss() -> torch.Tensor:
        with autocast:
            return F.cross_entropy(supervised(images), labels)

    def mae_loss() -> torch.Tensor:
        with autocast:
            return mae(images)[0]

    seconds = median_step_seconds(
        {"supervised": train_step(supervised, supervised_loss), "mae": train_step(mae, mae_loss)},
        args.steps,
        args.warmup,
        args.device,
    )
    supervised_s, mae_s = seconds["supervised"], seconds["mae"]
    print(
        f"{args.model}, batch {args.batch_size}, {args.device}, mask ratio {args.mask_ratio}, "
        f"decoder depth {args.decoder_depth}: supervised step {supervised_s * 1e3:.0f} ms, "
        f"MAE step {mae_s * 1e3:.0f} ms"
    )
    print(f"MAE / supervised step time: {mae_s / supervised_s:.3f}  (goal <= 0.35)")


if __name__ == "__main__":
    main()
