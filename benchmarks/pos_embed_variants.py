"""Training-step time of each ``pos_embed`` variant over ``learned`` (the same ViT otherwise).

Each step is forward + backward + AdamW (fused) on the same inputs; the variants run in
alternation in one process, so load from other processes weighs on all alike. On CUDA the
steps run under bf16 autocast (the relative bias then goes to the fused kernel as a bf16 mask).

    python benchmarks/pos_embed_variants.py                          # ViT-Ti/16, batch 8, CPU
    python benchmarks/pos_embed_variants.py --model vit_b --batch-size 128 --steps 20 \\
        --device cuda
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from device_timing import add_timing_arguments, is_cuda, warm_up
from mae_vs_supervised import median_step_seconds, train_step

from vitlab.models.pos_embed import POS_EMBEDS
from vitlab.models.vit import VisionTransformer

MODELS = {
    "vit_ti": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vit_ti")
    parser.add_argument("--img-size", type=int, default=224)
    add_timing_arguments(parser, batch_size=8)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    labels = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    autocast = torch.autocast(
        torch.device(args.device).type, dtype=torch.bfloat16, enabled=is_cuda(args.device)
    )
    steps = {}
    for pos_embed in POS_EMBEDS:
        with torch.device(args.device):
            model = VisionTransformer(
                img_size=args.img_size, pos_embed=pos_embed, **MODELS[args.model]
            )

        def loss(model: VisionTransformer = model) -> torch.Tensor:
            with autocast:
                return F.cross_entropy(model(images), labels)

        steps[pos_embed] = train_step(model, loss)
    for step in steps.values():
        warm_up(step, args.warmup, args.device)
    seconds = median_step_seconds(steps, args.steps, args.device)
    print(f"{args.model}/16, batch {args.batch_size}, {args.img_size} px, {args.device}")
    for pos_embed, value in seconds.items():
        print(
            f"{pos_embed}: {value * 1e3:.1f} ms a step, "
            f"ratio {pos_embed}/learned {value / seconds['learned']:.3f}"
        )


if __name__ == "__main__":
    main()
