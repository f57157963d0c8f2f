"""On a CUDA GPU: what the CPU suite cannot show. A Lightning fit with bf16-mixed precision on the
device, our ViT against timm's under bf16 autocast with the fused attention kernels only, and the
MAE's loss and gradients under bf16 against fp32. Skipped without CUDA; ``pytest -m gpu`` selects
them (``benchmarks/cuda.sh`` is the GPU benchmark run)."""

from __future__ import annotations

import math
from contextlib import nullcontext

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitlab.data.digits import DigitsDataModule
from vitlab.models.vit import VisionTransformer
from vitlab.tasks.classification import ClassificationTask

DEVICE = "cuda"
# the fused kernels a GPU runs attention with: a layout they refuse fails here, not silently
# falling back to the slow explicit (math) attention
FUSED_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """|actual - expected| / |expected| over the whole tensor, in fp32."""
    expected = expected.float()
    return ((actual.float() - expected).norm() / expected.norm()).item()


class StepRecord(L.Callback):
    """Each training step's loss and the device it was computed on."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.devices: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())
        self.devices.add(outputs["loss"].device.type)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_bf16_mixed_fit_on_the_gpu_lowers_the_loss(
    vit_config, optimizer_config, quiet_trainer, task_recipe
):
    torch.manual_seed(0)
    task = ClassificationTask(
        vit_config(patch_size=4, embed_dim=64, num_heads=4),
        optimizer_config(lr=2e-2, weight_decay=0.05),
        **task_recipe("classification", warmup_epochs=0, label_smoothing=0.0),
    )
    logit_dtypes: set[torch.dtype] = set()
    task.model.head.register_forward_hook(lambda module, args, out: logit_dtypes.add(out.dtype))
    record = StepRecord()
    trainer = quiet_trainer(
        accelerator=DEVICE,
        devices=1,
        precision="bf16-mixed",
        max_epochs=6,
        limit_train_batches=10,
        limit_val_batches=2,
        callbacks=[record],
    )
    trainer.fit(task, datamodule=DigitsDataModule(batch_size=64))

    assert record.devices == {DEVICE}
    assert logit_dtypes == {torch.bfloat16}  # the model ran under bf16 autocast
    losses = record.losses
    assert len(losses) == 60 and all(math.isfinite(loss) for loss in losses)
    # from chance (ln 10 = 2.30) to about 1.6 in 60 steps (fp32 and bf16 alike, on the CPU)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3, losses
    assert trainer.callback_metrics["val/loss"] < 1.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_our_vit_matches_timms_under_bf16_autocast_with_fused_attention():
    torch.manual_seed(0)
    config = dict(img_size=224, patch_size=16, embed_dim=384, depth=6, num_heads=6)
    with torch.device(DEVICE):
        reference = TimmViT(num_classes=100, **config)
        ours = VisionTransformer(num_classes=100, **config)
        images = torch.randn(8, 3, 224, 224)
        labels = torch.randint(0, 100, (8,))
    ours.load_state_dict(reference.state_dict())

    def step(model: torch.nn.Module, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the patch projection's gradient (back through every block)."""
        model.zero_grad(set_to_none=True)
        kernels = sdpa_kernel(FUSED_ATTENTION) if bf16 else nullcontext()
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16), kernels:
            logits = model(images)
        F.cross_entropy(logits.float(), labels).backward()
        return logits.detach(), model.patch_embed.proj.weight.grad.clone()

    logits, grad = step(reference, bf16=False)  # the fp32 reference
    timm_logits, timm_grad = step(reference, bf16=True)
    our_logits, our_grad = step(ours, bf16=True)

    assert our_logits.dtype == torch.bfloat16
    # what bf16 costs timm (about 1% here), it may cost us, about as much and not much more
    timm_error, timm_grad_error = (
        relative_error(timm_logits, logits),
        relative_error(timm_grad, grad),
    )
    assert relative_error(our_logits, logits) < min(0.05, 2 * timm_error + 0.005)
    assert relative_error(our_logits, timm_logits) < 0.05
    assert relative_error(our_grad, grad) < min(0.1, 2 * timm_grad_error + 0.01)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mae_loss_and_gradients_under_bf16_autocast_match_fp32(tiny_vit, tiny_mae):
    torch.manual_seed(0)
    encoder = tiny_vit(
        img_size=64, patch_size=8, in_chans=3, embed_dim=192, depth=4, num_heads=3,
        pos_embed="sincos",
    )  # fmt: skip
    mae = tiny_mae(encoder, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    mae.to(DEVICE)
    images = torch.randn(8, 3, 64, 64, device=DEVICE)

    def step(bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, predictions, mask (the same draw each time) and all gradients, flattened."""
        mae.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
            loss, pred, mask = mae(images)
        loss.backward()
        grads = [p.grad.flatten() for p in mae.parameters() if p.requires_grad]
        return loss.detach(), pred.detach(), mask.float(), torch.cat(grads)

    loss, _, mask, grads = step(bf16=False)
    bf16_loss, bf16_pred, bf16_mask, bf16_grads = step(bf16=True)

    assert bf16_pred.dtype == torch.bfloat16  # the decoder ran in bf16
    assert torch.equal(bf16_mask, mask)
    assert bf16_loss.dtype == torch.float32 and torch.isfinite(bf16_loss)
    assert abs(bf16_loss.item() - loss.item()) < 0.01 * loss.item()
    assert torch.isfinite(bf16_grads).all()
    assert relative_error(bf16_grads, grads) < 0.05
