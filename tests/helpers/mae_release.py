"""Reference code of the MAE release (github.com/facebookresearch/mae), transcribed for the tests:
vitlab's MAE, schedule and checkpoint format are checked against these, not against themselves.

Each function names the file and function it transcribes; the code is the release's, with its
variable names, trimmed of what the tests do not use.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# timm 0.3.2's ``Block``, which ``models_mae.py`` builds its encoder and decoder from: the names
# of one block's parameters and their shapes for width ``dim`` (mlp_ratio 4, qkv_bias True)
BLOCK_PARAMETERS = {
    "norm1.weight": lambda dim: (dim,),
    "norm1.bias": lambda dim: (dim,),
    "attn.qkv.weight": lambda dim: (3 * dim, dim),
    "attn.qkv.bias": lambda dim: (3 * dim,),
    "attn.proj.weight": lambda dim: (dim, dim),
    "attn.proj.bias": lambda dim: (dim,),
    "norm2.weight": lambda dim: (dim,),
    "norm2.bias": lambda dim: (dim,),
    "mlp.fc1.weight": lambda dim: (4 * dim, dim),
    "mlp.fc1.bias": lambda dim: (4 * dim,),
    "mlp.fc2.weight": lambda dim: (dim, 4 * dim),
    "mlp.fc2.bias": lambda dim: (dim,),
}


def mae_state_shapes(
    img_size: int = 224,
    patch_size: int = 16,
    in_chans: int = 3,
    embed_dim: int = 768,
    depth: int = 12,
    decoder_embed_dim: int = 512,
    decoder_depth: int = 8,
) -> dict[str, tuple[int, ...]]:
    """The state dict of ``models_mae.MaskedAutoencoderViT.__init__``, name -> shape, in its
    order; the defaults are ``mae_vit_base_patch16_dec512d8b``'s."""
    num_patches = (img_size // patch_size) ** 2
    shapes = {
        "cls_token": (1, 1, embed_dim),
        "pos_embed": (1, num_patches + 1, embed_dim),
        "mask_token": (1, 1, decoder_embed_dim),
        "decoder_pos_embed": (1, num_patches + 1, decoder_embed_dim),
        "patch_embed.proj.weight": (embed_dim, in_chans, patch_size, patch_size),
        "patch_embed.proj.bias": (embed_dim,),
    }
    for i in range(depth):
        shapes |= {
            f"blocks.{i}.{name}": shape(embed_dim) for name, shape in BLOCK_PARAMETERS.items()
        }
    shapes |= {
        "norm.weight": (embed_dim,),
        "norm.bias": (embed_dim,),
        "decoder_embed.weight": (decoder_embed_dim, embed_dim),
        "decoder_embed.bias": (decoder_embed_dim,),
    }
    for i in range(decoder_depth):
        shapes |= {
            f"decoder_blocks.{i}.{name}": shape(decoder_embed_dim)
            for name, shape in BLOCK_PARAMETERS.items()
        }
    return shapes | {
        "decoder_norm.weight": (decoder_embed_dim,),
        "decoder_norm.bias": (decoder_embed_dim,),
        "decoder_pred.weight": (patch_size**2 * in_chans, decoder_embed_dim),
        "decoder_pred.bias": (patch_size**2 * in_chans,),
    }


def random_masking(x: torch.Tensor, mask_ratio: float):
    """``models_mae.py``: ``MaskedAutoencoderViT.random_masking``."""
    N, L, D = x.shape  # batch, length, dim
    len_keep = int(L * (1 - mask_ratio))

    noise = torch.rand(N, L, device=x.device)  # noise in [0, 1]

    # sort noise for each sample
    ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
    ids_restore = torch.argsort(ids_shuffle, dim=1)

    # keep the first subset
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))

    # generate the binary mask: 0 is keep, 1 is remove
    mask = torch.ones([N, L], device=x.device)
    mask[:, :len_keep] = 0
    # unshuffle to get the binary mask
    mask = torch.gather(mask, dim=1, index=ids_restore)

    return x_masked, mask, ids_restore


def initialize_weights(model: nn.Module) -> None:
    """``models_mae.py``: ``MaskedAutoencoderViT.initialize_weights`` without its two sin-cos
    table copies (vitlab builds those tables itself; ``tests/models/test_pos_embed.py``)."""
    # initialize patch_embed like nn.Linear (instead of nn.Conv2d)
    w = model.patch_embed.proj.weight.data
    torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1]))

    # timm's trunc_normal_(std=.02) is effectively normal_(std=0.02) as cutoff is too big (2.)
    torch.nn.init.normal_(model.cls_token, std=0.02)
    torch.nn.init.normal_(model.mask_token, std=0.02)

    # initialize nn.Linear and nn.LayerNorm
    model.apply(_init_weights)


def _init_weights(m: nn.Module) -> None:
    """``models_mae.py``: ``MaskedAutoencoderViT._init_weights``."""
    if isinstance(m, nn.Linear):
        # we use xavier_uniform following official JAX ViT:
        torch.nn.init.xavier_uniform_(m.weight)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def adjust_learning_rate(
    epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: int
) -> float:
    """``util/lr_sched.py``: ``adjust_learning_rate``'s lr, called every iteration with the
    fractional ``epoch = data_iter_step / len(data_loader) + epoch`` (``engine_pretrain.py``)."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    return min_lr + (lr - min_lr) * 0.5 * (
        1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs))
    )
