"""Decoding image files: PIL for any format, TorchCodec for JPEGs, reduced-size JPEG decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.data.decode import decode_image, is_image, load_image
from vitlab.data.synthetic import synthetic_image


def test_images_are_recognised_by_their_extension_in_any_case():
    assert is_image("a.JPEG") and is_image("b.png") and is_image("c.tiff")
    assert not is_image("notes.txt") and not is_image("jpeg")


def test_fast_path_decodes_large_jpegs_at_reduced_size(tmp_path: Path):
    path = tmp_path / "large.jpg"
    synthetic_image((800, 600), 0, np.random.default_rng(0)).save(path)
    reduced = load_image(str(path), min_side=150)
    assert reduced.size == (200, 150)
    assert load_image(str(path), min_side=400).size == (800, 600)
    assert load_image(str(path)).size == (800, 600)
    assert decode_image(str(path), min_side=150).size == (200, 150)


def test_fast_path_decodes_jpegs_to_the_same_tensors_as_pil(tmp_path: Path):
    photo = synthetic_image((400, 300), 0, np.random.default_rng(0))
    photo.save(tmp_path / "photo.jpg")
    photo.save(tmp_path / "photo.png")
    decoded = decode_image(str(tmp_path / "photo.jpg"), min_side=224)
    assert isinstance(decoded, torch.Tensor) and decoded.shape == (3, 300, 400)
    reference = np.asarray(load_image(str(tmp_path / "photo.jpg"))).astype(int)
    assert np.abs(decoded.permute(1, 2, 0).numpy() - reference).max() <= 2
    assert decode_image(str(tmp_path / "photo.png")).size == (400, 300)
    truncated = tmp_path / "truncated.jpg"
    jpeg = (tmp_path / "photo.jpg").read_bytes()
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(OSError, match="incomplete or truncated"):
        decode_image(str(truncated))
