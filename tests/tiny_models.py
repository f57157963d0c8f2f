"""Digits-sized models shared by the tests (8x8 one-channel images, 2x2 patches)."""

from __future__ import annotations

from vitlab.models.mae import MaskedAutoencoderViT

TINY_ENCODER = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=4)


def tiny_mae(**kwargs) -> MaskedAutoencoderViT:
    decoder = dict(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    return MaskedAutoencoderViT(**(TINY_ENCODER | decoder | kwargs))
