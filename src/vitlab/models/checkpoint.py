"""Pretrained weights into a ``VisionTransformer``: vitlab, official MAE and timm checkpoints.

Accepted checkpoints (files read with ``torch.load(weights_only=True)``, or their contents):

- a vitlab Lightning checkpoint: ``{"state_dict": {"model.<name>": ...}, ...}``; of an iBOT
  run, its EMA teacher's encoder (``teacher.module.backbone.<name>``), which the iBOT and DINO
  releases score and transfer (their evaluations' ``checkpoint_key=teacher``);
- an MAE release checkpoint: ``{"model": {<name>: ...}}``;
- a plain state dict, e.g. a timm ViT's ``model.state_dict()``.

Where a job's weights come from (a file, ``timm:``/``hf-hub:`` names, W&B artifacts) is
``vitlab.weights``'s concern; this module only converts and loads.

The MAE decoder (``mask_token``, ``decoder_*``) is dropped, ``torch.compile``'s ``_orig_mod.``
is stripped, and the classifier (``head``, ``fc_norm``) is never loaded: it keeps the model's
fresh initialisation. Position encodings follow the model's patch grid, by variant
(``vitlab.models.pos_embed``): a ``pos_embed`` table is resampled bicubic, and so is each block's
relative position bias table over its offsets; ``conditional`` and ``rope`` have nothing that
depends on the grid. BEiT/EVA-style separate ``q_bias`` and ``v_bias`` (timm's ``Beit`` and
``Eva``) become the fused ``qkv.bias`` with a zero key bias, which is what they compute, and
their layer scales ``gamma_1``/``gamma_2`` become timm's ViT names ``ls1.gamma``/``ls2.gamma``
(the model needs ``layer_scale_init`` set to hold them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from vitlab.models.pos_embed import resample
from vitlab.models.relative_position import resample_table
from vitlab.models.vit import VisionTransformer

log = logging.getLogger(__name__)

DECODER_PREFIXES = ("mask_token", "decoder_")
CLASSIFIER_PREFIXES = ("head.", "fc_norm.")
LIGHTNING_MODEL_PREFIX = "model."
TEACHER_PREFIX = "teacher.module.backbone."
# the keys that exist for some pos_embed choices only
POSITION_KEYS = ("pos_embed", "relative_position_bias_table", ".peg.proj.weight", ".peg.proj.bias")
LAYER_SCALE_KEYS = (".ls1.gamma", ".ls2.gamma")
Checkpoint = str | os.PathLike | Mapping[str, Any]


def read_state_dict(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint (a file, or what ``torch.load`` read from one) under
    timm names, without the MAE decoder."""
    if isinstance(checkpoint, str | os.PathLike):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if "state_dict" in checkpoint:
        lightning_state = checkpoint["state_dict"]
        has_teacher = any(name.startswith(TEACHER_PREFIX) for name in lightning_state)
        prefix = TEACHER_PREFIX if has_teacher else LIGHTNING_MODEL_PREFIX
        state = {
            name.removeprefix(prefix): tensor
            for name, tensor in lightning_state.items()
            if name.startswith(prefix)
        }
    elif "model" in checkpoint:
        state = checkpoint["model"]
    else:
        state = checkpoint
    state = {name.replace("_orig_mod.", ""): tensor for name, tensor in state.items()}
    return {name: tensor for name, tensor in state.items() if not name.startswith(DECODER_PREFIXES)}


def fitted_state(
    model: VisionTransformer, checkpoint: Checkpoint, name: object = None
) -> dict[str, torch.Tensor]:
    """A checkpoint's encoder as ``model`` loads it (renamed, position tables resampled to its
    grid); a ``ValueError`` naming the keys (``name``: the checkpoint, in the message) when it does
    not fit beyond the classifier. Only shapes are read from ``model``, so a weightless copy
    (on the meta device) checks a checkpoint without loading it.

    The classifier keys of ``model`` are expected to be missing; with ``global_pool="avg"``
    the checkpoint's final ``norm`` is expected to be left over (``fc_norm`` replaces it).
    """
    name = checkpoint if name is None else name
    state = {
        key: tensor
        for key, tensor in read_state_dict(checkpoint).items()
        if not key.startswith(CLASSIFIER_PREFIXES)
    }
    state = rename_layer_scale(fuse_qkv_bias(state))
    grid = model.patch_embed.grid_size
    if "pos_embed" in state and model.pos_embed is not None:
        state["pos_embed"] = resample(state["pos_embed"], grid, model.num_prefix_tokens)
    for key in [key for key in state if key.endswith("relative_position_bias_table")]:
        state[key] = resample_table(state[key], grid)
    expected = model.state_dict()
    missing = [
        key for key in expected if key not in state and not key.startswith(CLASSIFIER_PREFIXES)
    ]
    unexpected = [key for key in state if key not in expected]
    if model.global_pool == "avg":
        unexpected = [key for key in unexpected if not key.startswith("norm.")]
    if missing or unexpected:
        hint = ""
        if any(key.endswith(POSITION_KEYS) for key in missing + unexpected):
            hint = f"; was it trained with another model.pos_embed than {model.pos_embed_type!r}?"
        elif any(key.endswith(LAYER_SCALE_KEYS) for key in missing + unexpected):
            hint = "; layer scale in one and not the other: set model.layer_scale_init?"
        raise ValueError(
            f"{name} does not fit the model: missing {preview(missing)}, "
            f"unexpected {preview(unexpected)}{hint}"
        )
    reshaped = [
        f"{key} {tuple(tensor.shape)} for {tuple(expected[key].shape)}"
        for key, tensor in state.items()
        if key in expected and tensor.shape != expected[key].shape
    ]
    if reshaped:
        raise ValueError(
            f"{name} does not fit the model: {preview(reshaped)} of another shape; "
            "was it trained with another model (embed_dim, depth, patch_size, in_chans)?"
        )
    return {key: tensor for key, tensor in state.items() if key in expected}


def load_pretrained(model: VisionTransformer, checkpoint: Checkpoint, name: object = None) -> None:
    """Load a checkpoint's encoder into ``model`` (``fitted_state``): any key or shape that does
    not fit beyond the classifier fails, naming ``name`` (default: the checkpoint's path)."""
    state = fitted_state(model, checkpoint, name)
    model.load_state_dict(state, strict=False)
    log.debug("loaded %d tensors from %s; classifier left at its initialisation", len(state), name)


def fuse_qkv_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``<attn>.q_bias`` and ``<attn>.v_bias`` -> ``<attn>.qkv.bias`` = [q_bias, 0, v_bias]; stored
    relative position indices (older BEiT files) are dropped, the model builds its own."""
    fused = {}
    for name, tensor in state.items():
        if name.endswith("relative_position_index"):
            continue
        if name.endswith(".q_bias"):
            attn = name.removesuffix(".q_bias")
            v_bias = state[f"{attn}.v_bias"]
            fused[f"{attn}.qkv.bias"] = torch.cat([tensor, torch.zeros_like(tensor), v_bias])
        elif not name.endswith(".v_bias"):
            fused[name] = tensor
    return fused


def rename_layer_scale(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BEiT's and EVA's ``blocks.N.gamma_1``/``gamma_2`` -> timm ViT's ``blocks.N.ls1.gamma``/
    ``ls2.gamma``."""
    renamed = {}
    for name, tensor in state.items():
        for old, new in ((".gamma_1", ".ls1.gamma"), (".gamma_2", ".ls2.gamma")):
            if name.endswith(old):
                name = name.removesuffix(old) + new
        renamed[name] = tensor
    return renamed


def preview(names: list[str], shown: int = 5) -> str:
    """``"2 keys (a, b)"``, or the first ``shown`` names and a count of the rest."""
    listed = ", ".join(names[:shown]) + (
        f", ... {len(names) - shown} more" if len(names) > shown else ""
    )
    return f"{len(names)} keys ({listed})" if names else "no keys"
