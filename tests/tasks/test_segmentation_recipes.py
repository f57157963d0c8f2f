"""The segmentation recipes: the ADE20K ones' values are the papers' (their released
mmsegmentation configs), line by line (the README's meta-device test, tests/test_readme.py,
builds each one); the digits one decodes with PUP and swaps in the other decoders."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vitlab.models.seg_decoders import (
    LinearDecoder,
    MaskTransformerDecoder,
    ProgressiveUpsamplingDecoder,
)
from vitlab.optim import effective_batch_size, scaled_lr
from vitlab.tasks.base import build_task

SEGMENTER = "mmsegmentation configs/segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py"
SEGMENTER_RELEASE = "Segmenter release segm/config.yml (decoder mask_transformer)"
SETR = "mmsegmentation configs/setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py"
SCHEDULE = "mmsegmentation configs/_base_/schedules/schedule_160k.py"
ADE = "mmsegmentation configs/_base_/datasets/ade20k.py"

# (config key, value, source); "peak_lr" and "batch" are derived from the config below
SHARED = [
    ("data.num_classes", 150, ADE),
    ("data.reduce_zero_label", True, ADE),
    ("data.ignore_index", 255, ADE),
    ("data.train_short_side", [256, 1024], ADE + ": RandomResize (2048, 512), ratio 0.5-2.0"),
    ("data.mean", [0.485, 0.456, 0.406], ADE + ": mean 123.675, 116.28, 103.53"),
    ("model.img_size", 512, ADE + ": crop_size (512, 512)"),
    ("model.patch_size", 16, "ViT-*/16"),
    ("task.optimizer._target_", "torch.optim.SGD", SCHEDULE),
    ("task.optimizer.momentum", 0.9, SCHEDULE),
    ("task.optimizer.weight_decay", 0.0, "optimizer = dict(lr=0.001, weight_decay=0.0)"),
    ("peak_lr", 1e-3, "optimizer = dict(lr=0.001, ...)"),
    ("task.decay", "poly", SCHEDULE + ": PolyLR"),
    ("task.poly_power", 0.9, SCHEDULE),
    ("task.min_lr", 1e-4, SCHEDULE + ": eta_min=1e-4"),
    ("task.warmup_epochs", 0, SCHEDULE + ": no warmup"),
    ("trainer.max_steps", 160000, SCHEDULE),
]
RECIPES = {
    "segmenter_b_ade20k": SHARED
    + [
        ("model.embed_dim", 768, SEGMENTER + ": ViT-B"),
        ("model.depth", 12, SEGMENTER),
        ("model.drop_path_rate", 0.1, SEGMENTER),
        ("task.model.decoder._target_", "vitlab.models.seg_decoders.MaskTransformerDecoder", ""),
        ("task.model.decoder.depth", 2, SEGMENTER + ": num_layers=2"),
        ("task.model.decoder.dim", 768, SEGMENTER + ": embed_dims=768"),
        ("task.model.decoder.num_heads", 12, SEGMENTER + ": num_heads=12"),
        ("task.model.decoder.dropout", 0.1, SEGMENTER_RELEASE + ": dropout 0.1"),
        ("task.model.decoder.drop_path_rate", 0.0, SEGMENTER_RELEASE + ": drop_path_rate 0.0"),
        ("task.lr_mult", {}, SEGMENTER + ": no paramwise_cfg"),
        ("batch", 8, SEGMENTER + ": 8 GPUs x batch_size=1"),
    ],
    "setr_pup_ade20k": SHARED
    + [
        ("model.embed_dim", 1024, SETR + ": ViT-L"),
        ("model.depth", 24, SETR),
        ("model.drop_rate", 0.0, SETR + ": drop_rate=0."),
        ("model.drop_path_rate", 0.0, "configs/_base_/models/setr_pup.py: none"),
        (
            "task.model.decoder._target_",
            "vitlab.models.seg_decoders.ProgressiveUpsamplingDecoder",
            "",
        ),  # noqa: E501
        ("task.model.decoder.layers", 1, "setr_pup.py: in_index=3 of out_indices, block 23"),
        ("task.model.decoder.channels", 256, "setr_pup.py: decode_head channels=256"),
        ("task.model.decoder.dropout", 0.0, "setr_pup.py: dropout_ratio=0"),
        ("task.lr_mult", {"decoder.": 10.0}, SETR + ": custom_keys head lr_mult=10."),
        ("trainer.sync_batchnorm", True, "setr_pup.py: norm_cfg SyncBN"),
        ("batch", 16, SETR + ": 8 GPUs x batch_size=2"),
    ],
}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_ade20k_recipe_values_are_the_papers(experiment: str, compose_config):
    cfg = compose_config(f"experiment={experiment}")
    batch = effective_batch_size(cfg.data.batch_size, cfg.trainer.devices, cfg.trainer.num_nodes)
    derived = {"batch": batch, "peak_lr": scaled_lr(cfg.task.optimizer.lr, batch)}
    for key, value, source in RECIPES[experiment]:
        got = derived[key] if key in derived else OmegaConf.select(cfg, key)
        if OmegaConf.is_config(got):
            got = OmegaConf.to_container(got)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (
            f"{experiment}: {key} = {got}, the paper's {value} ({source})"
        )


@pytest.mark.parametrize(
    ("overrides", "decoder"),
    [
        ((), ProgressiveUpsamplingDecoder),
        (("task/decoder=linear", "~task.model.decoder.channels"), LinearDecoder),
        (("task/decoder=mask_transformer", "~task.model.decoder.channels"), MaskTransformerDecoder),
    ],
)
def test_digits_recipe_decodes_with_pup_and_the_readme_swaps_in_the_others(
    overrides: tuple[str, ...], decoder: type, compose_config
):
    """The README's digits commands for each decoder (Results table) build their decoder."""
    cfg = compose_config("experiment=digits_segmentation", *overrides)
    task = build_task(cfg.task)
    assert type(task.model.decoder) is decoder
    if decoder is ProgressiveUpsamplingDecoder:
        assert task.model.decoder.classifier.in_channels == 32
