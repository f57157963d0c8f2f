"""The ``extras`` group (lightning-hydra-template's run conveniences) through train.py: printing
the config, silencing warnings, requiring tags."""

from __future__ import annotations

from tests.helpers.budget import CAP

# Lightning's hint on a run of fewer batches than its logging interval, which CAP's runs are
LOGGING_INTERVAL_HINT = "smaller than the logging interval"


def test_a_run_prints_its_config_and_its_warnings_unless_extras_say_not_to(cli):
    stderr = cli("train.py", *CAP, "logger=csv").stderr
    assert "── task" in stderr and LOGGING_INTERVAL_HINT in stderr
    quiet = ("extras.print_config=false", "extras.ignore_warnings=true")
    stderr = cli("train.py", *CAP, "logger=csv", *quiet).stderr
    assert "── task" not in stderr and LOGGING_INTERVAL_HINT not in stderr


def test_enforce_tags_refuses_a_run_without_tags_before_any_work(cli):
    result = cli("train.py", "extras.enforce_tags=true", "tags=[]", check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: tags: this run has none and extras.enforce_tags is on")
    assert cli.run_dirs() == []
