"""A mistyped key is one line naming the closest keys, exit 2, before anything runs."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("trainer.max_epoch=3", "error: trainer.max_epoch: no such key; did you mean max_epochs?"),
        ("seeed=1", "error: seeed: no such key; did you mean seed?"),
        ("data.zzz=1", "error: data.zzz: no such key; add one with +data.zzz=..."),
    ],
)
def test_a_mistyped_key_names_the_closest_ones(override, error, cli):
    result = cli("train.py", override, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [error]
    assert not cli.log_dir.exists()
