"""Two train.py processes as two "nodes" of one CPU process each on 127.0.0.1, started the way a
cluster launcher starts a multi-node job: the same command on every node, with the launcher's
variables (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE) and one shared run directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]  # where the test helpers import from


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_one_run_on_disjoint_data_to_equal_weights(cli, tmp_path: Path):
    run_dir = cli.log_dir / "train" / "runs" / "job_1"
    records = tmp_path / "records"
    command = [
        sys.executable,
        "train.py",
        "trainer=multinode",
        "trainer.num_nodes=2",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "debug=fdr",
        "test=false",
        f"hydra.run.dir={run_dir}",
        "+callbacks.node_record._target_=tests.helpers.node_record.NodeRecord",
        f"+callbacks.node_record.folder={records}",
    ]
    launcher = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    python_path = os.pathsep.join([str(ROOT), cli.env.get("PYTHONPATH", "")])
    nodes = [
        subprocess.Popen(
            command,
            cwd=cli.repo,
            env=cli.env | launcher | {"NODE_RANK": str(node), "PYTHONPATH": python_path},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]

    # one run: its directory, checkpoints and W&B run, written by rank 0
    assert cli.run_dirs() == [run_dir]
    assert "per device x 1 device(s) x 2 node(s)" in (run_dir / "train.log").read_text()
    assert "per device x" not in outputs[1]  # node 1 reports nothing
    assert len(list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))) == 1
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # each node trained on its own half of the batches, to the same weights
    node_0, node_1 = (torch.load(records / f"node_{rank}.pt") for rank in (0, 1))
    assert node_0["world"] == node_1["world"] == 2
    assert len(node_0["samples"]) == len(node_1["samples"]) > 0
    assert set(node_0["samples"]).isdisjoint(node_1["samples"])
    assert node_0["weights"].keys() == node_1["weights"].keys()
    for name, weight in node_0["weights"].items():
        torch.testing.assert_close(weight, node_1["weights"][name], msg=name)
