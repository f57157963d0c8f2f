"""The overlays predict.py draws of masks and boxes: enlarged to be seen, one box per object."""

from __future__ import annotations

import torch

from vitlab.predict_dense import OVERLAY_MIN_SIDE, box_overlay, palette, segment

NAMES = ["background", "0", "1", "2"]


def colour_pixels(overlay: torch.Tensor, colour: tuple[int, int, int]) -> int:
    return int((overlay == torch.tensor(colour)[:, None, None]).all(0).sum())


def test_one_box_per_object_is_shown_whatever_the_classes_the_detector_kept():
    canvas = torch.full((3, 32, 32), 40, dtype=torch.uint8)
    # one digit found as a "1" and, overlapping, as a "2" (per-class suppression keeps both);
    # a "0" elsewhere
    boxes = torch.tensor([[4.0, 4, 14, 16], [5, 4, 14, 15], [20, 18, 30, 30]])
    overlay = box_overlay(canvas, boxes, [2, 3, 1], [0.9, 0.6, 0.8], NAMES)
    assert overlay.shape == (3, OVERLAY_MIN_SIDE, OVERLAY_MIN_SIDE)
    colours = palette(len(NAMES))
    assert colour_pixels(overlay, colours[2]) > 0 and colour_pixels(overlay, colours[1]) > 0
    assert colour_pixels(overlay, colours[3]) == 0  # the weaker overlapping box is not drawn


def test_a_label_fits_inside_its_enlarged_box():
    canvas = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    overlay = box_overlay(canvas, torch.tensor([[4.0, 4, 14, 16]]), [2], [0.9], NAMES)
    # the label tag ("1 0.90", black on the class colour) sits in the box, 8x enlarged to
    # 80x96 pixels: drawn at 32 pixels, it was wider than the box
    inside = overlay[:, 4 * 8 : 16 * 8, 4 * 8 : 14 * 8]
    assert (inside < 100).all(0).sum() > 20  # the label's black text
    dark = (overlay < 100).all(0).nonzero()
    assert (dark[:, 0] < 16 * 8).all() and (dark[:, 1] < 14 * 8).all()  # none of it outside
    assert colour_pixels(overlay[:, 16 * 8 + 2 :], palette(len(NAMES))[2]) == 0


def test_a_mask_overlay_is_enlarged_and_the_mask_stays_at_the_images_size():
    logits = torch.zeros(len(NAMES), 8, 8)
    logits[2, 2:6, 2:6] = 5.0  # a "1" in the middle
    mask, overlay = segment(logits, torch.zeros(3, 32, 32, dtype=torch.uint8), NAMES)
    assert mask.shape == (32, 32) and set(mask.unique().tolist()) == {0, 2}
    assert overlay.shape == (3, OVERLAY_MIN_SIDE, OVERLAY_MIN_SIDE)
    painted = (overlay != 0).any(0)
    assert painted.sum() == (mask == 2).sum() * 8 * 8
