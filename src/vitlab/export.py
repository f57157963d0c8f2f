"""A trained checkpoint as deployable files: ``python -m vitlab.export CKPT OUT_DIR [--onnx]``.

Writes ``model.safetensors`` (the ``VisionTransformer`` state dict, timm names, nothing else; a
linear probe's BatchNorm is folded into its Linear head),
``config.json`` (its constructor arguments: ``VisionTransformer(**config)`` loads it) and with
``--onnx`` ``model.onnx`` (dynamic batch), checked against PyTorch on random images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from vitlab.checkpoint_file import read_checkpoint, stored_config
from vitlab.errors import UserError, existing_file
from vitlab.models.checkpoint import preview, read_state_dict
from vitlab.models.probe import PROBE_EPS
from vitlab.models.vit import VisionTransformer

VIT_TARGET = f"{VisionTransformer.__module__}.{VisionTransformer.__name__}"
WEIGHTS_FILE, CONFIG_FILE, ONNX_FILE = "model.safetensors", "config.json", "model.onnx"
# fp32 kernels of ONNX Runtime and PyTorch agree far closer than this on a ViT's logits
ONNX_TOLERANCE = 1e-4


def vit_config(run_cfg: DictConfig) -> dict[str, Any]:
    """The ``VisionTransformer`` arguments of a run config's ``model`` group."""
    model = OmegaConf.to_container(run_cfg.model, resolve=True)
    target = model.pop("_target_", None)
    if target != VIT_TARGET:
        raise UserError(f"model: expected a {VIT_TARGET}, the checkpoint's model is {target}")
    return model


def trained_vit(ckpt_path: Path) -> tuple[VisionTransformer, DictConfig]:
    """The classifier a train.py checkpoint holds (eval mode, on the CPU), and its run config."""
    run_cfg = stored_config(read_checkpoint(ckpt_path), ckpt_path)
    model = VisionTransformer(**vit_config(run_cfg))
    state = fold_probe_head(read_state_dict(ckpt_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"ckpt_path: {ckpt_path} is not a VisionTransformer classifier of task "
            f"{run_cfg.task._target_}: missing {preview(missing)}, unexpected {preview(unexpected)}"
        )
    return model.eval(), run_cfg


def fold_probe_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A linear probe's head (``probe_head``: BatchNorm without affine, then Linear) as the one
    Linear it computes in eval mode, so the export is a plain ViT; other states pass as they are.
    """
    if "head.0.running_var" not in state:
        return state
    state = dict(state)
    inv_std = (state.pop("head.0.running_var") + PROBE_EPS).rsqrt()
    mean = state.pop("head.0.running_mean")
    state.pop("head.0.num_batches_tracked", None)
    weight = state.pop("head.1.weight") * inv_std
    state["head.weight"] = weight
    state["head.bias"] = state.pop("head.1.bias") - weight @ mean
    return state


def export_safetensors(model: VisionTransformer, config: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    # contiguous copies: safetensors refuses views that share storage
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, out_dir / WEIGHTS_FILE)
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return out_dir / WEIGHTS_FILE


def load_exported(out_dir: Path) -> VisionTransformer:
    """What a consumer of the export does: the config and weights, no vitlab checkpoint code."""
    model = VisionTransformer(**json.loads((out_dir / CONFIG_FILE).read_text()))
    model.load_state_dict(load_file(out_dir / WEIGHTS_FILE))
    return model.eval()


def example_images(model: VisionTransformer, batch: int = 2) -> torch.Tensor:
    channels = model.patch_embed.proj.in_channels
    return torch.randn(
        batch, channels, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(0)
    )


def export_onnx(model: VisionTransformer, out_dir: Path) -> float:
    """``model.onnx`` with a dynamic batch; returns its max abs logit difference from PyTorch."""
    import onnxruntime

    path = out_dir / ONNX_FILE
    torch.onnx.export(
        model,
        (example_images(model),),
        path,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
    )
    images = example_images(model, batch=3)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    difference = (torch.from_numpy(logits) - expected).abs().max().item()
    if difference > ONNX_TOLERANCE:
        raise RuntimeError(
            f"ONNX logits differ from PyTorch by {difference:.2e} > {ONNX_TOLERANCE}"
        )
    return difference


def export(ckpt_path: Path, out_dir: Path, onnx: bool = False) -> dict[str, Path]:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out_dir: {out_dir} is a file; give a folder to write into")
    model, run_cfg = trained_vit(existing_file(ckpt_path, "ckpt_path"))
    written = {"weights": export_safetensors(model, vit_config(run_cfg), out_dir)}
    written["config"] = out_dir / CONFIG_FILE
    if onnx:
        difference = export_onnx(model, out_dir)
        print(f"ONNX matches PyTorch: max abs logit difference {difference:.2e}")
        written["onnx"] = out_dir / ONNX_FILE
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitlab.export", description=__doc__)
    parser.add_argument("ckpt_path", type=Path, help="a checkpoint written by train.py")
    parser.add_argument("out_dir", type=Path, help="where the exported files go")
    parser.add_argument("--onnx", action="store_true", help="also export model.onnx and check it")
    args = parser.parse_args(argv)
    try:
        written = export(args.ckpt_path, args.out_dir, onnx=args.onnx)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for kind, path in written.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
