"""A mistyped key is one line naming the closest keys, exit 2, before anything runs."""

from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from vitlab.cli import train


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("trainer.max_epoch=3", "error: trainer.max_epoch: no such key; did you mean max_epochs?"),
        ("seeed=1", "error: seeed: no such key; did you mean seed?"),
        ("data.zzz=1", "error: data.zzz: no such key; add one with +data.zzz=..."),
    ],
)
def test_a_mistyped_key_names_the_closest_ones(override, error, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vitlab-train", "logger=none", override])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as refused:
        train.main()
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [error]
    assert not (tmp_path / "logs").exists()
