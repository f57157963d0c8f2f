"""Masked autoencoder (He et al., 2022) with the parameter names of the MAE release.

The encoder is any ``VisionTransformer`` (the ``model`` group's), of which the MAE keeps the
parts the release names at its top level (``patch_embed``, ``cls_token``, ``pos_embed``,
``blocks``, ``norm``, and the checkpoint-free ``position`` and ``pos_drop``) and only feeds the
visible patches, made by the ViT's own ``prepare_tokens``; its classifier is not used. A light
decoder (``decoder_*``) receives the encoded visible tokens plus ``mask_token`` at every masked
position and predicts the pixels of all patches. The loss is the mean squared error on the
masked patches only.
"""

from __future__ import annotations

import torch
from torch import nn

from vitlab.models.pos_embed import sincos_2d
from vitlab.models.vit import Block, Blocks, LayerNorm, PatchTokens, VisionTransformer


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """How many patches the encoder sees: ``int(N * (1 - r))``, rounded down as the release's
    ``random_masking`` does (``models_mae.py``: ``len_keep = int(L * (1 - mask_ratio))``)."""
    return int(num_patches * (1 - mask_ratio))


def random_masking(
    batch: int,
    length: int,
    mask_ratio: float,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``1 - mask_ratio`` of each sample's ``length`` tokens (the ones with the
    least noise).

    Returns the indices of the kept tokens (B, ``num_visible(N, r)``; ``prepare_tokens``'s
    ``keep``), the mask (B, N; 1 = removed, float) and the indices that restore the original
    token order from [visible, removed]. ``generator`` draws the noise (seeded evaluation masks);
    the global RNG otherwise, in the same draw as the release's ``random_masking``.
    """
    num_keep = num_visible(length, mask_ratio)
    noise = torch.rand(batch, length, device=device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = (ids_restore >= num_keep).float()
    return ids_shuffle[:, :num_keep], mask, ids_restore


class MaskedAutoencoderViT(PatchTokens, nn.Module):
    """ViT encoder over visible patches + transformer decoder that reconstructs masked pixels.

    ``encoder`` gives the architecture (size, patch, position embeddings, drop path); its final
    ``norm`` normalises all tokens, as in the release (an average-pooling encoder, whose ``norm``
    is the identity, gets a fresh one). ``norm_pix_loss`` regresses each patch normalised by its
    own mean and variance (computed in fp32), which the paper found to give better
    representations.

    The whole autoencoder, the encoder's blocks included, is initialised as the release's
    (``initialize_weights``), not as the supervised ViT.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        decoder_embed_dim: int,
        decoder_depth: int,
        decoder_num_heads: int,
        mask_ratio: float,
        norm_pix_loss: bool,
    ):
        super().__init__()
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if encoder.pos_embed is None:
            raise ValueError(
                f"the MAE encoder sees only the visible patches, which needs a position table: "
                f"model.pos_embed must be learned or sincos, got {encoder.pos_embed_type!r}"
            )
        self.embed_dim = encoder.embed_dim
        self.patch_embed = encoder.patch_embed
        self.cls_token = encoder.cls_token
        self.pos_embed = encoder.pos_embed
        self.position = encoder.position
        self.pos_drop = encoder.pos_drop
        self.blocks = encoder.blocks
        self.norm = (
            encoder.norm if isinstance(encoder.norm, nn.LayerNorm) else LayerNorm(encoder.embed_dim)
        )
        self.in_chans = self.patch_embed.proj.in_channels
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        grid = self.patch_embed.grid_size
        patch_h, patch_w = self.patch_embed.patch_size

        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_embed_dim)
        self.decoder_pos_embed = nn.Parameter(
            sincos_2d(decoder_embed_dim, grid, cls_token=True), requires_grad=False
        )
        self.decoder_blocks = Blocks(
            *(
                Block(decoder_embed_dim, decoder_num_heads, encoder.mlp_ratio)
                for _ in range(decoder_depth)
            )
        )
        # the encoder's choice of activation checkpointing holds for the decoder too
        self.decoder_blocks.grad_checkpointing = encoder.blocks.grad_checkpointing
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_h * patch_w * self.in_chans)
        self.initialize_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block of the encoder and the decoder (``Blocks``)."""
        self.blocks.grad_checkpointing = enable
        self.decoder_blocks.grad_checkpointing = enable

    def initialize_weights(self) -> None:
        """The release's ``initialize_weights`` and ``_init_weights`` (``models_mae.py``), in its
        order: the patch projection like a Linear (xavier-uniform on its flattened weight), the
        class and mask tokens normal (std 0.02), then every Linear xavier-uniform with zero bias
        and every LayerNorm 1 / 0. Position embeddings are left as they are: fixed sin-cos
        tables, or an encoder's learned ones at their own initialisation."""
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_xavier_linear_and_norm)

    def no_weight_decay(self) -> set[str]:
        """None besides biases and norms: the release's pretraining decays every other weight,
        ``cls_token`` and ``mask_token`` included (``main_pretrain.py`` builds its groups with
        timm's ``add_weight_decay``, which skips one-dimensional parameters and an empty list)."""
        return set()

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, patch_h * patch_w * C), pixels in (row, column, channel) order."""
        (grid_h, grid_w), (patch_h, patch_w) = (
            self.patch_embed.grid_size,
            self.patch_embed.patch_size,
        )
        batch = images.shape[0]
        patches = images.reshape(batch, self.in_chans, grid_h, patch_h, grid_w, patch_w)
        patches = torch.einsum("nchpwq->nhwpqc", patches)
        return patches.reshape(batch, grid_h * grid_w, patch_h * patch_w * self.in_chans)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, patch_h * patch_w * C) -> (B, C, H, W), the inverse of ``patchify``."""
        (grid_h, grid_w), (patch_h, patch_w) = (
            self.patch_embed.grid_size,
            self.patch_embed.patch_size,
        )
        batch = patches.shape[0]
        images = patches.reshape(batch, grid_h, grid_w, patch_h, patch_w, self.in_chans)
        images = torch.einsum("nhwpqc->nchpwq", images)
        return images.reshape(batch, self.in_chans, grid_h * patch_h, grid_w * patch_w)

    def forward_encoder(
        self, images: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoded [cls, visible patches] (B, 1 + N_visible, D), the mask and restore indices."""
        num_patches = self.patch_embed.num_patches
        keep, mask, ids_restore = random_masking(
            images.shape[0], num_patches, mask_ratio, images.device, generator
        )
        latent = self.norm(self.blocks(self.prepare_tokens(images, keep=keep)))
        return latent, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch (B, N, patch_h * patch_w * C)."""
        tokens = self.decoder_embed(latent)
        batch, num_visible, dim = tokens[:, 1:].shape
        mask_tokens = self.mask_token.expand(batch, ids_restore.shape[1] - num_visible, -1)
        patches = torch.cat([tokens[:, 1:], mask_tokens], dim=1)
        patches = patches.gather(1, ids_restore[..., None].expand(-1, -1, dim))
        tokens = torch.cat([tokens[:, :1], patches], dim=1) + self.decoder_pos_embed
        return self.decoder_pred(self.decoder_norm(self.decoder_blocks(tokens)))[:, 1:]

    def forward_loss(
        self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only."""
        target = self.patchify(images).float()
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, images: torch.Tensor, mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predicted patches (B, N, P), mask (B, N) with 1 on the removed patches)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(images, ratio)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(images, pred, mask), pred, mask


def init_xavier_linear_and_norm(module: nn.Module) -> None:
    """The release's ``_init_weights``: xavier-uniform Linear weights ("following official JAX
    ViT"), zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
