"""Peak memory of a ViT training step with activation checkpointing per block over without it
(``model.grad_checkpointing=true``; lower is better), and the step time it costs.

Each step is forward + backward + fused AdamW on the same model and inputs, measured in the same
process. Peak memory is what the step allocates at most beyond what was allocated before it
(activations, gradients, optimizer state): on CPU counted tensor by tensor (every storage an op
creates, alive until freed), on CUDA by the caching allocator's peak. Checkpointing keeps one
token tensor per block instead of every intermediate activation, and recomputes the rest in
the backward pass. Defaults (ViT-B/16 at 224 px, batch 8) take about a minute on one CPU core:

    python benchmarks/grad_checkpointing.py
    python benchmarks/grad_checkpointing.py --model vit_l --batch-size 64 --device cuda
"""

from __future__ import annotations

import argparse
import time
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from device_timing import GIB, is_cuda, warm_up
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vitlab.models.vit import VisionTransformer

MODELS = {
    "vit_ti": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_s": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16),
}


class PeakTensorMemory(TorchDispatchMode):
    """The most bytes of tensor storage created inside the mode and alive at once: each new
    storage an op returns counts from its creation until it is freed (a storage's Python object
    lives as long as the storage itself, so a finalizer sees it go)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.bytes = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if is_dense(t)}
        for tensor in tree_leaves(out):
            if not is_dense(tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self.live:  # in place, a view, or counted
                continue
            self.live[key] = storage.nbytes()
            self.bytes += storage.nbytes()
            self.peak = max(self.peak, self.bytes)
            weakref.finalize(storage, self.free, key)
        return out

    def free(self, key: int) -> None:
        self.bytes -= self.live.pop(key, 0)


def is_dense(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.layout == torch.strided


def train_step(model: VisionTransformer, images: torch.Tensor, targets: torch.Tensor, device: str):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=is_cuda(device)):
            loss = F.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()

    return step


def peak_gib(step: Callable[[], None], device: str) -> float:
    """Peak memory of one step beyond what was allocated before it, in GiB (after a first
    step that created the optimizer state)."""
    step()
    if is_cuda(device):
        return warm_up(step, 1, device)
    with PeakTensorMemory() as memory:
        step()
    return memory.peak / GIB


def seconds(step: Callable[[], None], device: str) -> float:
    if is_cuda(device):
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if is_cuda(device):
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="vit_b")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = VisionTransformer(img_size=args.img_size, **MODELS[args.model]).to(args.device)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    targets = torch.randint(0, 1000, (args.batch_size,), device=args.device)
    step = train_step(model, images, targets, args.device)
    results = {}
    for checkpointed in (False, True):
        model.set_grad_checkpointing(checkpointed)
        results[checkpointed] = (peak_gib(step, args.device), seconds(step, args.device))
    (plain_gib, plain_s), (ckpt_gib, ckpt_s) = results[False], results[True]
    name = f"{args.model}/16 {args.img_size}px batch {args.batch_size} on {args.device}"
    print(f"{name}: peak step memory {plain_gib:.3f} GiB plain, {ckpt_gib:.3f} GiB checkpointed")
    print(f"{name}: step {plain_s:.2f} s plain, {ckpt_s:.2f} s checkpointed")
    print(f"ratio checkpointed/plain peak memory: {ckpt_gib / plain_gib:.3f}")
    print(f"ratio checkpointed/plain step time: {ckpt_s / plain_s:.3f}")


if __name__ == "__main__":
    main()
