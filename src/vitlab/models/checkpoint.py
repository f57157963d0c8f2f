"""Pretrained weights into a ``VisionTransformer``: vitlab, official MAE and timm checkpoints.

Accepted files (all read with ``torch.load(weights_only=True)``):

- a vitlab Lightning checkpoint: ``{"state_dict": {"model.<name>": ...}, ...}``;
- an MAE release checkpoint: ``{"model": {<name>: ...}}``;
- a plain state dict, e.g. a timm ViT's ``model.state_dict()``;

or a name (with the ``timm`` extra installed): ``timm:<model name>[.<tag>]`` is the weights timm
publishes for it (``timm:vit_base_patch16_224.augreg_in21k``), ``hf-hub:<repo>`` a timm model
on the Hugging Face Hub; both are downloaded once into the Hugging Face cache
(``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` reads only the cache).

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

import torch

from vitlab.errors import existing_file
from vitlab.extras import require
from vitlab.models.pos_embed import resample
from vitlab.models.relative_position import resample_table
from vitlab.models.vit import VisionTransformer

log = logging.getLogger(__name__)

DECODER_PREFIXES = ("mask_token", "decoder_")
CLASSIFIER_PREFIXES = ("head.", "fc_norm.")
LIGHTNING_MODEL_PREFIX = "model."
# the keys that exist for some pos_embed choices only
POSITION_KEYS = ("pos_embed", "relative_position_bias_table", ".peg.proj.weight", ".peg.proj.bias")
LAYER_SCALE_KEYS = (".ls1.gamma", ".ls2.gamma")
# pretrained weights by name, through timm
NAMED = ("timm:", "hf-hub:")


def check_source(source: str | os.PathLike, key: str) -> None:
    """A ``UserError`` naming ``key`` when ``source`` can be no checkpoint: a missing file, or a
    name without timm installed."""
    if str(source).startswith(NAMED):
        require("timm", key)
    else:
        existing_file(source, key)


def named_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights timm loads for ``timm:<model name>`` or ``hf-hub:<repo>``."""
    import timm

    try:
        model = timm.create_model(name.removeprefix("timm:"), pretrained=True)
    except (RuntimeError, OSError) as error:  # an unknown name; no such repository or file
        raise ValueError(f"{name}: {str(error).splitlines()[0]}") from None
    return model.state_dict()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint file (or named weights) under timm names, without
    the MAE decoder."""
    if str(path).startswith(NAMED):
        checkpoint = named_state_dict(str(path))
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in checkpoint:
        state = {
            name.removeprefix(LIGHTNING_MODEL_PREFIX): tensor
            for name, tensor in checkpoint["state_dict"].items()
            if name.startswith(LIGHTNING_MODEL_PREFIX)
        }
    elif "model" in checkpoint:
        state = checkpoint["model"]
    else:
        state = checkpoint
    state = {name.replace("_orig_mod.", ""): tensor for name, tensor in state.items()}
    return {name: tensor for name, tensor in state.items() if not name.startswith(DECODER_PREFIXES)}


def load_pretrained(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Load a checkpoint's encoder into ``model``; any key mismatch beyond the classifier fails.

    The classifier keys of ``model`` are expected to be missing; with ``global_pool="avg"``
    the checkpoint's final ``norm`` is expected to be left over (``fc_norm`` replaces it).
    """
    state = {
        name: tensor
        for name, tensor in read_state_dict(path).items()
        if not name.startswith(CLASSIFIER_PREFIXES)
    }
    state = rename_layer_scale(fuse_qkv_bias(state))
    grid = model.patch_embed.grid_size
    if "pos_embed" in state and model.pos_embed is not None:
        state["pos_embed"] = resample(state["pos_embed"], grid, model.num_prefix_tokens)
    for name in [name for name in state if name.endswith("relative_position_bias_table")]:
        state[name] = resample_table(state[name], grid)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.startswith(CLASSIFIER_PREFIXES)]
    if model.global_pool == "avg":
        unexpected = [name for name in unexpected if not name.startswith("norm.")]
    if missing or unexpected:
        hint = ""
        if any(name.endswith(POSITION_KEYS) for name in missing + unexpected):
            hint = f"; was it trained with another model.pos_embed than {model.pos_embed_type!r}?"
        elif any(name.endswith(LAYER_SCALE_KEYS) for name in missing + unexpected):
            hint = "; layer scale in one and not the other: set model.layer_scale_init?"
        raise ValueError(
            f"{path} does not fit the model: missing {preview(missing)}, "
            f"unexpected {preview(unexpected)}{hint}"
        )
    log.debug("loaded %d tensors from %s; classifier left at its initialisation", len(state), path)


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
