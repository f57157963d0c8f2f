"""The linear-probe head: BatchNorm without affine parameters, then a Linear, foldable into one."""

from __future__ import annotations

import torch
from torch import nn

from vitlab.models.probe import ProbeHead


def trained_head(embed_dim: int = 32, num_classes: int = 10) -> ProbeHead:
    """A head whose BatchNorm has seen features far from zero mean and unit variance, and whose
    Linear has a bias (a fresh one has none)."""
    head = ProbeHead(embed_dim, num_classes)
    head.train()
    with torch.no_grad():
        for _ in range(20):
            head(3.0 + 5.0 * torch.randn(64, embed_dim))
        head[1].bias.normal_()
    return head.eval()


def test_the_head_is_a_batchnorm_without_affine_then_a_linear():
    norm, linear = ProbeHead(32, 10)
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine and norm.eps == 1e-6
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (32, 10)
    assert torch.equal(linear.bias, torch.zeros(10))


def test_in_a_vit_its_state_keys_are_head_0_and_head_1(tiny_vit):
    model = tiny_vit()
    model.head = ProbeHead(model.embed_dim, model.num_classes)
    keys = {key for key in model.state_dict() if key.startswith("head.")}
    assert keys == {
        "head.0.running_mean",
        "head.0.running_var",
        "head.0.num_batches_tracked",
        "head.1.weight",
        "head.1.bias",
    }


def test_folded_linear_gives_the_outputs_of_the_head_in_eval_mode():
    head = trained_head()
    assert not torch.equal(head[0].running_mean, torch.zeros(32))  # statistics were learned
    folded = head.folded()
    assert type(folded) is nn.Linear
    features = 3.0 + 5.0 * torch.randn(16, 32)
    with torch.no_grad():
        expected = head(features)
        torch.testing.assert_close(folded(features), expected, rtol=1e-5, atol=1e-5)
        # the head itself is left as it was: still normalising with its statistics
        torch.testing.assert_close(head(features), expected, rtol=0, atol=0)
    assert not torch.allclose(expected, head[1](features))  # the normalisation matters


def test_folding_does_not_share_tensors_with_the_head():
    head = trained_head()
    folded = head.folded()
    with torch.no_grad():
        folded.weight.zero_()
        folded.bias.zero_()
    assert head[1].weight.abs().sum() > 0 and head[1].bias.abs().sum() > 0
