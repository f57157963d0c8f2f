"""A multirun with failed jobs ends with "N of M jobs failed", each job's reason, and exit 1."""

from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from vitlab.cli import train


def test_a_sweep_with_a_failed_job_names_it_and_exits_non_zero(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    sweep = ["vitlab-train", "-m", "model.patch_size=3,2", "debug=fdr", "logger=none"]
    # a run rewrites sys.argv for the DDP ranks it may start (vitlab.distributed)
    monkeypatch.setattr(sys, "argv", sweep)
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as stopped:
        train.main()
    assert stopped.value.code == 1
    summary = capsys.readouterr().err.splitlines()[-2:]
    assert summary[0] == "1 of 2 jobs failed:"
    assert summary[1].startswith(
        "  0 (model.patch_size=3 debug=fdr logger=none): model: patch size"
    )
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert (sweep_dir / "1" / "metrics.json").is_file()
