"""Every command in the README's code blocks, run as printed.

Each command runs in a fresh copy of the repository (shared by this module, so that
``<timestamp>`` can name a run an earlier command made; the commands run in order, on one
pytest-xdist worker), with the default logger (W&B, offline because there are no credentials)
and the default paths, in this process (``tests.helpers.cli``) unless its row says it runs in a
process of its own. ``PLAN`` is the one table of what this test adds or does instead: a budget
cap (``CAP``) appended to a command, the files a command's placeholders name, or, for a command
this machine cannot run (GPU, ImageNet, SLURM), the reason and a build of its config on the meta
device. A README command without a row fails ``test_every_readme_command_has_a_plan``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from PIL import Image
from sklearn.datasets import load_digits

from tests.helpers.budget import CAP
from tests.helpers.wandb_records import run_contents
from vitlab.checks import check_arguments, check_model
from vitlab.cli import CONFIG_PATH
from vitlab.data.synthetic import write_image_tree
from vitlab.tasks.base import build_task

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SETUP = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python train.py'
)


def readme_commands() -> list[str]:
    """The shell commands of the README's ```bash blocks, without their trailing comments."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


# --- what a command's placeholders name, made in the copy when missing --------------------------


def run_with(cli, *overrides: str) -> Path:
    """The run directory of ``train.py <overrides>`` in this copy: an earlier one, or a new one."""
    for run_dir in cli.run_dirs():
        stored = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        if (run_dir / "checkpoints" / "last.ckpt").is_file() and set(stored) == {*overrides, *CAP}:
            return run_dir
    cli("train.py", *overrides, *CAP)
    return cli.run_dirs()[-1]


def digit_pngs(cli) -> Path:
    """A folder of the digits as 8-bit PNG files (nested, to exercise the search)."""
    folder = cli.repo / "digit_pngs"
    digits = load_digits()
    for index in range(12):
        path = folder / f"part_{index // 6}" / f"digit_{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[index] * 255 / 16).round().astype("uint8")
        Image.fromarray(pixels, mode="L").save(path)
    return folder


def relative(path: Path, cli) -> str:
    return str(path.relative_to(cli.repo))


PLACEHOLDERS: dict[str, Callable] = {
    "<timestamp>": lambda cli: run_with(cli).name,
    "<pretrain>": lambda cli: run_with(cli, "experiment=digits_mae_pretrain").name,
    "<ibot>": lambda cli: run_with(cli, "experiment=digits_ibot").name,
    "<fmnist pretrain>": lambda cli: run_with(cli, "experiment=fmnist_mae_pretrain").name,
    "<ckpt>": lambda cli: relative(run_with(cli) / "checkpoints" / "last.ckpt", cli),
    "<image or folder>": lambda cli: relative(digit_pngs(cli), cli),
}


def with_placeholders_filled(command: str, cli) -> str:
    for placeholder, fill in PLACEHOLDERS.items():
        if placeholder in command:
            command = command.replace(placeholder, fill(cli))
    return command


# --- checks of what particular commands must show ------------------------------------------------


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def sweep_jobs(cli, jobs: int) -> list[Path]:
    """The newest sweep's job directories: ``jobs`` of them, each tested and logged to its own
    offline W&B run, with its own settings."""
    sweep = cli.sweep_dirs()[-1]
    job_dirs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(job_dirs) == jobs
    runs = []
    for job_dir in job_dirs:
        assert "test/acc1" in metrics_of(job_dir)
        (run_file,) = job_dir.glob("wandb/offline-run-*/run-*.wandb")
        runs.append(run_contents(run_file))
    assert len({run["id"] for run in runs}) == jobs
    settings = {
        (r["config"]["model"]["depth"], r["config"]["task"]["optimizer"]["lr"]) for r in runs
    }
    assert settings == {(2, 1e-2), (2, 5e-3), (4, 1e-2), (4, 5e-3)}
    return job_dirs


def optuna_scored_each_trial_by_its_best(cli, result: subprocess.CompletedProcess) -> None:
    sweep = cli.sweep_dirs()[-1]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {
        "task.optimizer.lr",
        "task.optimizer.weight_decay",
        "model.drop_path_rate",
    }
    # each trial scored by its best validation top-1, not its last
    scores = [metrics_of(sweep / str(n))["val/acc1_best"] for n in range(2)]
    assert results["best_value"] == pytest.approx(max(scores))


def one_run_of_two_processes(cli, result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert output.count("DigitsDataModule") == 1  # the config tree, printed by rank 0 only
    assert "Seed set" not in output  # rank 1 prints nothing
    run_dir = cli.run_dirs()[-1]
    assert "per device x 2 device(s) x 1 node(s)" in (run_dir / "train.log").read_text()
    best, last = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert best.startswith("epoch_") and last == "last.ckpt"
    assert len(list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def knn_logged(cli, result: subprocess.CompletedProcess) -> None:
    assert 0 < metrics_of(cli.run_dirs()[-1])["val/knn_acc1"] <= 1


def attention_maps_in_wandb(cli, result: subprocess.CompletedProcess) -> None:
    run_dir = cli.run_dirs()[-1]
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/val/attention_*.png"))


def best_checkpoint_by_miou(cli, result: subprocess.CompletedProcess) -> None:
    """The segmentation task's own metric picks the best checkpoint."""
    assert "val/miou_best" in metrics_of(cli.run_dirs()[-1])


def best_checkpoint_by_map(cli, result: subprocess.CompletedProcess) -> None:
    """The detection task's COCO mAP picks the best checkpoint and scores the test split."""
    metrics = metrics_of(cli.run_dirs()[-1])
    assert "val/map_best" in metrics and {"test/map", "test/map_50"} <= metrics.keys()


def memorised_one_batch(cli, result: subprocess.CompletedProcess) -> None:
    metrics = metrics_of(cli.run_dirs()[-1])
    assert metrics["train/acc1"] == 1.0 and metrics["train/loss"] < 0.05


def evaluated_beside_its_average(cli, result: subprocess.CompletedProcess) -> None:
    metrics = metrics_of(cli.run_dirs()[-1])
    assert {"val_ema/acc1", "test_ema/acc1", "test/acc1"} <= metrics.keys()


def offline_wandb_run(cli, result: subprocess.CompletedProcess) -> None:
    (run_file,) = cli.run_dirs()[-1].glob("wandb/offline-run-*/run-*.wandb")
    assert run_file.stat().st_size > 1000


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How this test covers one README command.

    ``run``: the command as printed (``runs``: the part of it that runs, when the rest is the
    install that ``.ci/run`` does), ``cap`` appended, in this process or (``process``) in one of
    its own; ``prepare`` writes what it reads first and ``check`` asserts what it must show
    beyond a clean exit. Otherwise ``reason`` says why it
    cannot run here, and its config is composed and built on the meta device (``meta``) or it is
    this test suite itself.
    """

    run: bool = True
    cap: tuple[str, ...] = CAP
    process: bool = False
    runs: str | None = None
    prepare: Callable | None = None
    check: Callable | None = None
    meta: bool = False
    reason: str = ""


def cannot_run(reason: str) -> Plan:
    return Plan(run=False, meta=True, reason=reason)


def write_imagenet_tree(cli) -> None:
    write_image_tree(cli.repo / "data" / "imagenet", {"train": 2, "val": 1})


PLAN: dict[str, Plan] = {
    # what a new user runs first, as they run it
    SETUP: Plan(runs="python train.py", process=True, check=offline_wandb_run),
    "python -m pytest": Plan(run=False, reason="the test suite itself: .ci/run runs it"),
    "python eval.py ckpt_path=logs/train/runs/<timestamp>/checkpoints/last.ckpt": Plan(cap=()),
    "python train.py experiment=none model=vit_b data=imagenet": cannot_run("needs ImageNet"),
    "python train.py experiment=deit_b_imagenet": cannot_run("needs ImageNet and 8 GPUs"),
    "python train.py experiment=none model=vit_s trainer=gpu trainer.max_epochs=300": cannot_run(
        "needs a GPU"
    ),
    "python train.py -m model.depth=2,4 task.optimizer.lr=1e-2,5e-3": Plan(
        check=lambda cli, result: sweep_jobs(cli, 4)
    ),
    "python train.py -m experiment=none model=vit_ti,vit_s task.optimizer.lr=1e-3,5e-4 data=imagenet": cannot_run(  # noqa: E501
        "needs ImageNet"
    ),
    "python train.py task.ema_decay=0.999 'callbacks=[default,early_stopping]'": Plan(
        check=evaluated_beside_its_average
    ),
    "python train.py debug=fdr": Plan(cap=()),
    "python train.py debug=overfit": Plan(cap=(), check=memorised_one_batch),
    "python train.py --help": Plan(cap=()),
    "python train.py --cfg job --resolve experiment=none model=vit_l": Plan(cap=()),
    "python train.py experiment=digits_mae_pretrain": Plan(),
    "python train.py experiment=digits_mae_finetune task.pretrained=logs/train/runs/<pretrain>/checkpoints/last.ckpt": Plan(),  # noqa: E501
    "python train.py experiment=digits_linear_probe task.pretrained=logs/train/runs/<pretrain>/checkpoints/last.ckpt": Plan(),  # noqa: E501
    "python train.py experiment=digits_scratch": Plan(),
    "python train.py experiment=digits_ibot": Plan(),
    'python train.py experiment=digits_linear_probe task.pretrained=logs/train/runs/<ibot>/checkpoints/last.ckpt "callbacks=[default,knn]"': Plan(  # noqa: E501
        check=knn_logged
    ),
    "python train.py experiment=ibot_vit_s": cannot_run("needs ImageNet and 16 GPUs"),
    "python train.py experiment=ibot_vit_b": cannot_run("needs ImageNet and 16 GPUs"),
    "python train.py experiment=mae_pretrain model=vit_l": cannot_run("needs ImageNet and GPUs"),
    "python train.py experiment=mae_finetune model=vit_l task.pretrained=mae_pretrain_vit_large.pth": cannot_run(  # noqa: E501
        "needs ImageNet, GPUs and the MAE release's weights (a download)"
    ),
    "python train.py experiment=mae_linprobe task.pretrained=mae_pretrain_vit_base.pth": cannot_run(
        "needs ImageNet, GPUs and the MAE release's weights (a download)"
    ),
    "python -m vitlab.data.pack data/imagenet data/imagenet_288 --short-side 288": Plan(
        cap=(), prepare=write_imagenet_tree
    ),
    "python -m vitlab.data.pack data/imagenet data/imagenet_shards --format shards": Plan(
        cap=(), prepare=write_imagenet_tree
    ),
    "python train.py experiment=none data=imagenet_shards model=vit_b data.root=s3://my-bucket/imagenet_shards": (  # noqa: E501
        cannot_run("needs ImageNet's shards in a bucket, and GPUs")
    ),
    "python train.py trainer=ddp trainer.devices=8": cannot_run("needs 8 GPUs"),
    # Lightning starts rank 1 by running sys.argv again: a process of its own
    "python train.py trainer=ddp_cpu trainer.devices=2": Plan(
        process=True, check=one_run_of_two_processes
    ),
    "python train.py -m hydra/launcher=slurm trainer=multinode trainer.num_nodes=4 hydra.launcher.partition=gpu": cannot_run(  # noqa: E501
        "needs a SLURM cluster"
    ),
    "python train.py experiment=none trainer=fsdp model=vit_l model.grad_checkpointing=true data=imagenet": (  # noqa: E501
        cannot_run("needs ImageNet and GPUs")
    ),
    "python train.py hparams_search=vit_optuna hydra.sweeper.n_trials=50": Plan(
        cap=(*CAP, "hydra.sweeper.n_trials=2"), check=optuna_scored_each_trial_by_its_best
    ),
    "python train.py ckpt_path=auto hydra.run.dir=logs/train/runs/<timestamp>": Plan(),
    "python predict.py ckpt_path=<ckpt> inputs=<image or folder> top_k=5": Plan(cap=()),
    "python -m vitlab.export <ckpt> exported/ --onnx": Plan(cap=()),
    "python train.py 'callbacks=[default,attention_maps]'": Plan(check=attention_maps_in_wandb),
    "python train.py experiment=digits_segmentation": Plan(check=best_checkpoint_by_miou),
    "python train.py experiment=segmenter_b_ade20k task.pretrained=vit_base_p16_384.pth": cannot_run(
        "needs ADE20K, 8 GPUs and ImageNet-pretrained weights (a download)"
    ),
    "python train.py experiment=setr_pup_ade20k task.pretrained=jx_vit_large_p16_384.pth": cannot_run(
        "needs ADE20K, 8 GPUs and ImageNet-pretrained weights (a download)"
    ),
    "python train.py experiment=digits_detection": Plan(check=best_checkpoint_by_map),
    "python train.py experiment=vitdet_b_coco task.pretrained=mae_pretrain_vit_base.pth": cannot_run(
        "needs COCO, 8 GPUs and the MAE release's weights (a download)"
    ),
    # Fashion-MNIST: the real files (.ci/run installs dataset-fashion-mnist), one batch each
    "python train.py experiment=fmnist_vit": Plan(),
    "python train.py experiment=fmnist_resnet": Plan(),
    "python train.py experiment=fmnist_resnet18": Plan(),
    "python train.py experiment=fmnist_ibot": Plan(),
    "python train.py experiment=fmnist_mae_pretrain": Plan(),
    "python train.py experiment=fmnist_linear_probe task.pretrained=logs/train/runs/<fmnist pretrain>/checkpoints/last.ckpt": Plan(),
    "python train.py experiment=fmnist_finetune task.pretrained=logs/train/runs/<fmnist pretrain>/checkpoints/last.ckpt": Plan(),
    "python train.py model.pos_embed=rope": Plan(),
}
COMMANDS = readme_commands()


def test_every_readme_command_has_a_plan():
    assert sorted(set(COMMANDS) - set(PLAN)) == [], "README commands this test does not cover"
    assert sorted(set(PLAN) - set(COMMANDS)) == [], "rows for commands no longer in the README"


def test_commands_that_cannot_run_here_say_why():
    for command in COMMANDS:
        plan = PLAN[command]
        assert plan.run or plan.reason, command


@pytest.mark.slow
@pytest.mark.xdist_group("readme")
@pytest.mark.parametrize("command", [c for c in COMMANDS if PLAN[c].run])
def test_readme_command_runs_as_printed(command: str, module_cli):
    plan = PLAN[command]
    if plan.prepare:
        plan.prepare(module_cli)
    filled = with_placeholders_filled(plan.runs or command, module_cli)
    words = shlex.split(filled)
    assert words[0] == "python"
    run = module_cli.in_subprocess if plan.process else module_cli
    result = run(*words[1:], *plan.cap)
    assert "Traceback" not in result.stderr
    if plan.check:
        plan.check(module_cli, result)


def first_job(override: str) -> str:
    """A sweep's override (``model=vit_ti,vit_s``) as its first job has it."""
    key, _, value = override.partition("=")
    return f"{key}={value.split(',')[0]}" if "," in value and "[" not in value else override


@pytest.mark.parametrize("command", [c for c in COMMANDS if PLAN[c].meta])
def test_readme_command_composes_and_builds_on_the_meta_device(command: str, tmp_path: Path):
    """What the command would build: its config composes and resolves, every argument is one
    its component takes, and the data, task (model and optimizer), callbacks and launcher build
    without data, GPUs or weights (the model on the meta device)."""
    overrides = [first_job(word) for word in shlex.split(command)[2:] if not word.startswith("-")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    check_arguments(cfg)
    check_model(cfg.model)
    instantiate(cfg.data)
    [instantiate(callback) for callback in cfg.callbacks.values()]
    with torch.device("meta"):
        task = build_task(cfg.task)
    assert all(p.is_meta for p in task.parameters())
    assert launcher["_target_"] and OmegaConf.to_container(cfg.trainer, resolve=True)
