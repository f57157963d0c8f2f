import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from vitlab.data.digits import DigitsDataModule
from vitlab.run import use_tf32_matmuls
from vitlab.tasks.base import fused_adam
from vitlab.tasks.classification import ClassificationTask


@pytest.fixture
def digits_task(vit_config, optimizer_config, task_recipe) -> Callable[..., ClassificationTask]:
    """``digits_task(**task_kwargs)``: a small digits classifier."""

    def build(**kwargs) -> ClassificationTask:
        model = vit_config(patch_size=4, embed_dim=16, num_heads=2)
        optimizer = optimizer_config(weight_decay=0.05)
        recipe = task_recipe("classification", warmup_epochs=0, **kwargs)
        return ClassificationTask(model, optimizer, **recipe)

    return build


@pytest.fixture
def eager_compile(monkeypatch):
    """nn.Module.compile with dynamo's eager backend: the same in-place wrapping, no C++ build."""
    compile_ = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda self: compile_(self, backend="eager"))


def test_compile_is_off_by_default_and_in_place_when_asked(eager_compile, digits_task):
    plain, compiled = digits_task(), digits_task(compile=True)
    plain.configure_model()
    compiled.configure_model()
    assert plain.model._compiled_call_impl is None
    assert compiled.model._compiled_call_impl is not None
    compiled.configure_model()  # fit then test: compiled once
    images = torch.randn(2, 1, 8, 8)
    compiled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(compiled(images), plain(images))


def test_compiled_checkpoint_keys_are_clean_and_load_uncompiled(
    eager_compile, tmp_path, digits_task, quiet_trainer
):
    torch.manual_seed(0)
    task = digits_task(compile=True)
    trainer = quiet_trainer(
        max_steps=2,
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=4))
    assert task.model._compiled_call_impl is not None
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = torch.load(tmp_path / "compiled.ckpt", weights_only=True)["state_dict"]
    assert not [key for key in state if "_orig_mod" in key]
    uncompiled = digits_task()
    uncompiled.load_state_dict(state, strict=True)
    images = torch.randn(3, 1, 8, 8)
    task.eval(), uncompiled.eval()
    torch.testing.assert_close(uncompiled(images), task(images))


@pytest.mark.slow
def test_inductor_compiled_model_matches_and_keeps_its_keys(digits_task):
    task, plain = digits_task(compile=True), digits_task()
    plain.load_state_dict(task.state_dict())
    task.configure_model()
    images = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(task(images), plain(images), atol=1e-5, rtol=1e-5)
    assert list(task.state_dict()) == list(plain.state_dict())


def test_adamw_runs_fused_on_cpu_unless_the_config_chose():
    adamw = functools.partial(torch.optim.AdamW, lr=1e-3)
    model = nn.Linear(2, 2)
    groups = [{"params": list(model.parameters())}]
    assert fused_adam(adamw, groups) == {"fused": True}
    assert fused_adam(functools.partial(adamw, foreach=True), groups) == {}
    assert fused_adam(functools.partial(torch.optim.SGD, lr=0.1), groups) == {}
    # built the way configure_optimizers builds it, it steps like the unfused optimizer
    reference = nn.Linear(2, 2)
    reference.load_state_dict(model.state_dict())
    initial = model.weight.detach().clone()
    fused = adamw(groups, **fused_adam(adamw, groups))
    unfused = adamw(reference.parameters())
    for optimizer, module in ((fused, model), (unfused, reference)):
        module(torch.ones(3, 2)).square().sum().backward()
        optimizer.step()
    torch.testing.assert_close(model.weight, reference.weight)
    assert not torch.equal(model.weight, initial)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_adamw_and_tf32_on_cuda():
    groups = [{"params": list(nn.Linear(2, 2).cuda().parameters())}]
    assert fused_adam(functools.partial(torch.optim.AdamW, lr=1e-3), groups) == {"fused": True}
    explicit = functools.partial(torch.optim.AdamW, lr=1e-3, foreach=True)
    assert fused_adam(explicit, groups) == {}
    previous = torch.get_float32_matmul_precision()
    try:
        use_tf32_matmuls()
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_tf32_is_left_alone_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    previous = torch.get_float32_matmul_precision()
    use_tf32_matmuls()
    assert torch.get_float32_matmul_precision() == previous
