"""Time of one iBOT pretraining step and one MAE step over one supervised step of the same ViT,
on the same images (lower is better).

Each step is forward + backward + AdamW (fused) on the same batch of images, measured in the
same process, in alternation (``mae_vs_supervised.median_step_seconds``). iBOT's step is
the task's own (``IBOTTask.losses``: the teacher on the 2 global views, the student on them with
block masks and on ``--local-crops`` local views, the recipe's 8192-prototype head) plus the
teacher's EMA update; its views of each image are 2 global crops at the model's size and the
local ones at 96 px, as the ImageNet recipes make them. MAE's is ``mae_vs_supervised``'s.
Defaults finish in about a minute on a CPU:

    python benchmarks/ibot_vs_mae.py                     # ViT-S/16, batch 2, 2 local crops
    python benchmarks/ibot_vs_mae.py --batch-size 64 --local-crops 10 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from device_timing import add_timing_arguments, is_cuda, warm_up
from mae_vs_supervised import ENCODERS, build_models, median_step_seconds, train_step
from omegaconf import OmegaConf

from vitlab.config import CONFIG_PATH
from vitlab.tasks.ibot import IBOTTask

LOCAL_SIZE = 96


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(ENCODERS), default="vit_s")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--local-crops", type=int, default=2)
    add_timing_arguments(parser, batch_size=2)
    return parser.parse_args()


def build_ibot(args: argparse.Namespace) -> IBOTTask:
    """The ImageNet recipe's task (conf/experiment/ibot_vit_s.yaml) on ``args.device``."""
    model = {
        "_target_": "vitlab.models.vit.VisionTransformer",
        "img_size": args.img_size,
        "drop_path_rate": 0.1,
        **ENCODERS[args.model],
    }
    # the task group's arguments (conf/task/ibot.yaml) with the ViT-S recipe's head
    recipe = OmegaConf.load(Path(CONFIG_PATH) / "task" / "ibot.yaml")
    recipe.head.norm_last_layer = False
    arguments = {k: v for k, v in OmegaConf.to_container(recipe).items() if k != "_target_"}
    with torch.device(args.device):
        return IBOTTask(**(arguments | {"model": model}))


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    batch, size = args.batch_size, args.img_size
    images = torch.randn(batch, 3, size, size, device=args.device)
    labels = torch.randint(0, 1000, (batch,), device=args.device)
    global_views = [torch.randn(batch, 3, size, size, device=args.device) for _ in range(2)]
    local_views = [
        torch.randn(batch, 3, LOCAL_SIZE, LOCAL_SIZE, device=args.device)
        for _ in range(args.local_crops)
    ]
    autocast = torch.autocast(
        torch.device(args.device).type, dtype=torch.bfloat16, enabled=is_cuda(args.device)
    )
    supervised, mae = build_models(args.model, args.img_size, args.device)
    ibot = build_ibot(args)

    def supervised_loss() -> torch.Tensor:
        with autocast:
            return F.cross_entropy(supervised(images), labels)

    def mae_loss() -> torch.Tensor:
        with autocast:
            return mae(images)[0]

    def ibot_loss() -> torch.Tensor:
        masks = ibot.draw_masks(global_views)
        with autocast:
            return ibot.losses(global_views, local_views, masks)["loss"]

    ibot_train = train_step(ibot, ibot_loss)

    def ibot_step() -> None:
        ibot_train()
        ibot.teacher.update(ibot.student())

    steps = {
        "supervised": train_step(supervised, supervised_loss),
        "mae": train_step(mae, mae_loss),
        "ibot": ibot_step,
    }
    for step in steps.values():
        warm_up(step, args.warmup, args.device)
    seconds = median_step_seconds(steps, args.steps, args.device)
    print(
        f"{args.model}, batch {batch}, {args.device}, 2 global + {args.local_crops} local "
        f"crops: supervised step {seconds['supervised'] * 1e3:.0f} ms, MAE step "
        f"{seconds['mae'] * 1e3:.0f} ms, iBOT step {seconds['ibot'] * 1e3:.0f} ms"
    )
    print(f"MAE / supervised step time: {seconds['mae'] / seconds['supervised']:.3f}")
    print(f"iBOT / supervised step time: {seconds['ibot'] / seconds['supervised']:.3f}")
    print(f"iBOT / MAE step time: {seconds['ibot'] / seconds['mae']:.3f}")


if __name__ == "__main__":
    main()
