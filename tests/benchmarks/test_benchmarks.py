"""The benchmark scripts run end to end with tiny arguments and print their ratio line, each
run as ``python benchmarks/<script>`` from a fresh copy (in this process)."""

import argparse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(cli, script: str, *args: str) -> str:
    """``OMP_NUM_THREADS=1 python benchmarks/<script> <args>`` (in this process, see
    ``tests.helpers.cli``): what it printed."""
    cli.env["OMP_NUM_THREADS"] = "1"
    return cli(f"benchmarks/{script}", *args).stdout


def test_vit_vs_timm_prints_a_ratio_per_config(cli):
    out = run_benchmark(
        cli,
        "vit_vs_timm.py",
        *("--img-size", "32", "--batch-size", "2", "--steps", "1", "--rounds", "2"),
        *("--warmup", "1", "--threads", "1"),
    )
    lines = [line for line in out.splitlines() if "ratio vitlab/timm" in line]
    assert [line.split(":")[0] for line in lines] == ["vit_ti/16 train", "vit_ti/16 infer"]


def test_lightning_overhead_prints_the_ratio(cli):
    out = run_benchmark(
        cli,
        "lightning_overhead.py",
        *("--steps", "3", "--warmup", "1", "--rounds", "2", "--threads", "1"),
    )
    assert "ratio lightning/raw:" in out
    assert "overhead" in out


def test_mae_vs_supervised_prints_the_ratio(cli):
    out = run_benchmark(
        cli,
        "mae_vs_supervised.py",
        *("--model", "vit_ti", "--img-size", "32", "--batch-size", "1", "--steps", "1"),
        *("--decoder-depth", "1"),
    )
    assert "MAE / supervised step time:" in out


def test_pos_embed_variants_prints_a_ratio_per_variant(cli):
    out = run_benchmark(
        cli, "pos_embed_variants.py", *("--img-size", "32", "--batch-size", "1", "--steps", "1")
    )
    lines = [line for line in out.splitlines() if "/learned" in line]
    assert [line.split(":")[0] for line in lines] == [
        "learned",
        "sincos",
        "relative",
        "conditional",
        "rope",
    ]


def test_data_pipeline_prints_a_ratio_per_pipeline_and_policy(cli):
    out = run_benchmark(
        cli,
        "data_pipeline.py",
        "--images",
        "8",
        "--img-size",
        "32",
        "--batch-size",
        "4",
        "--rounds",
        "1",
    )
    rows = [line for line in out.splitlines() if "images/s" in line]
    assert [row.split("  ")[0].strip() for row in rows] == [
        "torchvision ImageFolder + PIL",
        "timm create_transform + PIL",
        "vitlab",
        "vitlab + batch step",
        "vitlab, packed",
        "vitlab, packed + batch step",
    ]
    assert rows[0].endswith("1.00x")
    policies = [line for line in out.splitlines() if line.startswith("policy ")]
    assert [row.split("  ")[0] for row in policies] == [
        "policy vitlab, uint8 tensors",
        "policy vitlab, PIL",
        "policy timm, PIL",
    ]
    assert policies[-1].endswith("1.00x")


def test_grad_checkpointing_prints_the_memory_ratio(cli):
    out = run_benchmark(
        cli,
        "grad_checkpointing.py",
        *("--model", "vit_ti", "--img-size", "32", "--batch-size", "2", "--threads", "1"),
    )
    assert "ratio checkpointed/plain peak memory:" in out


def test_shard_loader_prints_the_ratio_against_the_packed_folder(cli):
    out = run_benchmark(
        cli,
        "shard_loader.py",
        *("--images", "4", "--img-size", "32", "--batch-size", "4", "--rounds", "1"),
    )
    rows = [line for line in out.splitlines() if "images/s" in line]
    assert [row.split("  ")[0].strip() for row in rows] == ["packed image folder", "LitData shards"]
    assert rows[0].endswith("1.00x") and "uint8" in out


def test_ibot_vs_mae_prints_the_ratios(cli):
    out = run_benchmark(
        cli,
        "ibot_vs_mae.py",
        *("--model", "vit_ti", "--img-size", "32", "--batch-size", "1", "--local-crops", "1"),
        *("--steps", "1"),
    )
    for ratio in ("MAE / supervised", "iBOT / supervised", "iBOT / MAE"):
        assert f"{ratio} step time:" in out


def test_timing_arguments_refuse_no_warmup_step(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_timing import add_timing_arguments

    parser = argparse.ArgumentParser()
    add_timing_arguments(parser, batch_size=4)
    assert parser.parse_args([]).warmup == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--warmup", "0"])
    assert "--warmup: must be at least 1, got 0" in capsys.readouterr().err
