"""Where a job's initial weights come from: ``task.pretrained`` resolved, checked and loaded.

A source is one of

- a checkpoint file (a vitlab checkpoint, an MAE release ``.pth``, a plain state dict: what
  ``vitlab.models.checkpoint`` converts);
- ``timm:<model name>[.<tag>]``, the weights timm publishes for it
  (``timm:vit_base_patch16_224.augreg_in21k``), or ``hf-hub:<repo>``, a timm model on the
  Hugging Face Hub: both downloaded once into the Hugging Face cache (``HF_HUB_CACHE``;
  ``HF_HUB_OFFLINE=1`` reads only the cache), with the ``timm`` extra installed;
- ``wandb:<entity>/<project>/<artifact>:<alias or version>``, a checkpoint that a run logged as a
  W&B artifact (``logger.wandb.log_model``), downloaded (``wandb_checkpoint``).

Before any work, ``check_source`` refuses what can be no weights (a missing file, a file that is
no checkpoint, a name without timm, a malformed or unreachable W&B name) and ``check_fits`` a
checkpoint file whose weights do not fit the task's target, each as one line naming the key.
When fitting starts, ``load_weights`` loads the weights: under data parallelism rank 0 fetches
the source (downloads a W&B artifact) while the other ranks wait for it, and every rank then
reads the same file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.loggers import WandbLogger
from torch import nn

from vitlab.checkpoint_file import RUN_CONFIG_KEY, read_checkpoint
from vitlab.compat import wandb_credentials_found
from vitlab.errors import UserError, existing_file
from vitlab.extras import require
from vitlab.models.checkpoint import fitted_state, load_pretrained

KEY = "task.pretrained"
# weights by name, through timm
NAMED = ("timm:", "hf-hub:")

WANDB_SOURCE = "wandb:"


def check_source(source: str, key: str = KEY) -> None:
    """A ``UserError`` naming ``key`` when ``source`` can be no weights: a missing file or one
    that is no PyTorch checkpoint, a name without timm installed, a W&B artifact name that is
    malformed or cannot be downloaded (no credentials)."""
    if source.startswith(NAMED):
        require("timm", key)
    elif source.startswith(WANDB_SOURCE):
        check_wandb_source(source, key)
    else:
        read_checkpoint(existing_file(source, key), key)


def check_fits(target: nn.Module, source: str, key: str = KEY) -> None:
    """A ``UserError`` naming ``key`` when the checkpoint file ``source`` does not fit ``target``
    (whose shapes alone are read: a copy on the meta device will do), naming the task a vitlab
    checkpoint was trained for. Named and W&B weights are checked when they are loaded."""
    if source.startswith((*NAMED, WANDB_SOURCE)):
        return
    checkpoint = read_checkpoint(existing_file(source, key), key)
    try:
        fitted_state(target, checkpoint, source)
    except ValueError as error:
        trained_for = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("task", {}).get("_target_")
        told = f" (a checkpoint of {trained_for.rsplit('.', 1)[-1]})" if trained_for else ""
        raise UserError(f"{key}: {error}{told}") from None


def load_weights(target: nn.Module, source: str, key: str = KEY) -> None:
    """The weights of ``source`` loaded into ``target`` (``vitlab.models.checkpoint``), fetched by
    rank 0 first (``on_rank_zero_first``); weights that do not fit are a ``UserError``."""
    local = on_rank_zero_first(lambda: fetch(source, key))
    try:
        checkpoint = named_state_dict(local) if local.startswith(NAMED) else local
        load_pretrained(target, checkpoint, source)
    except ValueError as error:
        raise UserError(f"{key}: {error}") from None


def fetch(source: str, key: str = KEY) -> str:
    """What to read ``source`` from on this machine: a W&B artifact's checkpoint file once
    downloaded; a file or a timm name as it is."""
    if source.startswith(WANDB_SOURCE):
        return wandb_checkpoint(source, key)
    return source


def on_rank_zero_first(fetcher: Callable[[], str]) -> str:
    """``fetcher()`` called on rank 0 only, its result shared with every rank of the process group
    (if any): the other ranks wait for rank 0 here, a barrier, and all get the same file. An
    error on rank 0 is raised on every rank, so that none waits for ever."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fetcher()
    # (result, error message, whether the error is the user's)
    shared: list[tuple[str | None, str | None, bool]] = [(None, None, False)]
    error: Exception | None = None
    if dist.get_rank() == 0:
        try:
            shared[0] = (fetcher(), None, False)
        except Exception as raised:  # every rank must hear of it, or the others wait for ever
            error = raised
            shared[0] = (None, str(raised), isinstance(raised, UserError))
    dist.broadcast_object_list(shared, src=0)
    result, message, users = shared[0]
    if error is not None:
        raise error
    if message is not None:
        raise UserError(message) if users else RuntimeError(f"rank 0 failed: {message}")
    return result


def named_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights timm loads for ``timm:<model name>`` or ``hf-hub:<repo>``."""
    import timm

    try:
        model = timm.create_model(name.removeprefix("timm:"), pretrained=True)
    except (RuntimeError, OSError) as error:  # an unknown name; no such repository or file
        raise ValueError(f"{name}: {str(error).splitlines()[0]}") from None
    return model.state_dict()


def check_wandb_source(source: str, key: str) -> str:
    """The artifact name of ``wandb:<entity>/<project>/<artifact>:<alias>``; a ``UserError``
    naming ``key`` when it is malformed or W&B has no credentials to download it with."""
    name = source.removeprefix(WANDB_SOURCE)
    entity_project, _, artifact = name.rpartition("/")
    if entity_project.count("/") != 1 or ":" not in artifact or "" in entity_project.split("/"):
        raise UserError(
            f"{key}: {source}: expected wandb:<entity>/<project>/<artifact>:<alias or version>, "
            "e.g. wandb:me/vitlab/model-1a2b3c4d:best"
        )
    if not wandb_credentials_found():
        raise UserError(
            f"{key}: {source}: downloading a W&B artifact needs W&B online: no credentials "
            "found (wandb login, or WANDB_API_KEY), or WANDB_MODE is offline"
        )
    return name


def wandb_checkpoint(source: str, key: str = "task.pretrained") -> str:
    """The checkpoint file of a W&B model artifact (``wandb:...``), downloaded; the W&B run of
    this process, if any, records the artifact as its input."""
    folder = Path(WandbLogger.download_artifact(check_wandb_source(source, key)))
    checkpoints = sorted(folder.rglob("*.ckpt"))
    if len(checkpoints) != 1:
        raise UserError(f"{key}: {source} holds {len(checkpoints)} .ckpt files, not one")
    return str(checkpoints[0])
