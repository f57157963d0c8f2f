"""Time of one MAE pretraining step over one supervised step of the same ViT (lower is better).

Both steps are forward + backward + AdamW (fused, as vitlab trains) on the same encoder,
measured in the same process on the same inputs; MAE's encoder runs on the visible 25% of the
patches and its decoder (task=mae_pretrain's, the release's) on all of them. On CUDA both run under
bf16 autocast, and the script also prints each step's peak memory: what its warm-up steps, run
alone, allocated at most beyond what was allocated before them (activations, gradients and
optimizer state). ``--compile`` compiles both models (``nn.Module.compile()``; the warm-up
steps then include the compilation). Defaults finish in under 2 minutes on a CPU:

    python benchmarks/mae_vs_supervised.py                      # ViT-B/16, batch 4, 3 steps
    python benchmarks/mae_vs_supervised.py --model vit_l --batch-size 64 --steps 20 \\
        --warmup 2 --device cuda [--decoder-depth 1] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from device_timing import add_timing_arguments, is_cuda, seconds_per_step, warm_up
from omegaconf import OmegaConf
from torch import nn

from vitlab.config import CONFIG_PATH
from vitlab.models.mae import MaskedAutoencoderViT
from vitlab.models.vit import VisionTransformer

ENCODERS = {
    "vit_ti": dict(embed_dim=192, depth=12, num_heads=3, patch_size=16),
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6, patch_size=16),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
}

# the MAE's arguments besides its encoder: conf/task/mae_pretrain.yaml's
MAE_RECIPE: dict[str, Any] = {
    key: value
    for key, value in OmegaConf.to_container(
        OmegaConf.load(Path(CONFIG_PATH) / "task" / "mae_pretrain.yaml").model
    ).items()
    if key not in ("_target_", "encoder")
}


def median_step_seconds(
    steps: dict[str, Callable[[], None]], repeats: int, device: str
) -> dict[str, float]:
    """Median wall time of each step, run in alternation so that load from other processes
    on a shared machine weighs on every step alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(seconds_per_step(step, 1, device))
    return {name: statistics.median(values) for name, values in times.items()}


def train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ENCODERS), default="vit_b")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--mask-ratio", type=float, default=MAE_RECIPE["mask_ratio"])
    parser.add_argument("--decoder-depth", type=int, default=MAE_RECIPE["decoder_depth"])
    parser.add_argument("--compile", action="store_true", help="nn.Module.compile() both models")
    add_timing_arguments(parser, batch_size=4)
    return parser.parse_args()


def build_models(
    model: str,
    img_size: int,
    device: str,
    compile: bool = False,
    **mae_changes: Any,
) -> tuple[nn.Module, nn.Module]:
    """The supervised ViT and the MAE over the same encoder architecture (``ENCODERS[model]``),
    on ``device`` (built there: no slow CPU initialisation of a large model first); the MAE is
    the recipe's with ``mae_changes``."""
    encoder = ENCODERS[model]
    with torch.device(device):
        supervised = VisionTransformer(img_size=img_size, num_classes=1000, **encoder)
        mae = MaskedAutoencoderViT(
            VisionTransformer(img_size=img_size, pos_embed="sincos", **encoder),
            **(MAE_RECIPE | mae_changes),
        )
    if compile:
        supervised.compile()
        mae.compile()
    return supervised, mae


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    autocast = torch.autocast(
        torch.device(args.device).type, dtype=torch.bfloat16, enabled=is_cuda(args.device)
    )
    supervised, mae = build_models(
        args.model,
        args.img_size,
        args.device,
        args.compile,
        mask_ratio=args.mask_ratio,
        decoder_depth=args.decoder_depth,
    )

    def supervised_loss() -> torch.Tensor:
        with autocast:
            return F.cross_entropy(supervised(images), labels)

    def mae_loss() -> torch.Tensor:
        with autocast:
            return mae(images)[0]

    steps = {
        "supervised": train_step(supervised, supervised_loss),
        "mae": train_step(mae, mae_loss),
    }
    peaks = {name: warm_up(step, args.warmup, args.device) for name, step in steps.items()}
    seconds = median_step_seconds(steps, args.steps, args.device)
    supervised_s, mae_s = seconds["supervised"], seconds["mae"]
    print(
        f"{args.model}, batch {args.batch_size}, {args.device}, mask ratio {args.mask_ratio}, "
        f"decoder depth {args.decoder_depth}, compile {args.compile}: "
        f"supervised step {supervised_s * 1e3:.0f} ms, MAE step {mae_s * 1e3:.0f} ms"
    )
    if peaks["supervised"] is not None and peaks["mae"] is not None:
        print(
            f"peak step memory: supervised {peaks['supervised']:.2f} GiB, "
            f"MAE {peaks['mae']:.2f} GiB"
        )
    print(f"MAE / supervised step time: {mae_s / supervised_s:.3f}  (goal <= 0.35)")


if __name__ == "__main__":
    main()
