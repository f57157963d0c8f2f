"""The raw-pixel baseline: its features are the pixels, and the linear probe trains and folds
its classifier on them as on an encoder's."""

from __future__ import annotations

import torch
from hydra.utils import instantiate

from vitlab.models.pixels import Pixels


def test_the_raw_pixel_probe_classifies_the_pixels_with_only_its_head_trained(compose_config):
    cfg = compose_config("experiment=fmnist_linear_probe", "model=pixels", "task.pretrained=null")
    task = instantiate(cfg.task, _recursive_=False)
    assert isinstance(task.model, Pixels) and task.model.embed_dim == 28 * 28
    images = torch.randn(8, 1, 28, 28)
    assert torch.equal(task.features(images), images.flatten(1))  # what the k-NN monitor votes on
    trained = {name for name, p in task.named_parameters() if p.requires_grad}
    assert trained == {f"model.head.{name}" for name, _ in task.model.head.named_parameters()}
    task.train()(images)  # one training-mode batch: the probe's BatchNorm gathers statistics
    task.eval()
    folded = task.classifier()
    torch.testing.assert_close(folded(images), task(images), rtol=1e-5, atol=1e-5)
