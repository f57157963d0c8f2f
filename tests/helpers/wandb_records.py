"""Read back what a W&B run wrote (its ``.wandb`` file of protobuf records), with the reader
that resumed runs use (``vitlab.loggers.records``)."""

from __future__ import annotations

import json
from pathlib import Path

from vitlab.loggers import item_key, records


def run_contents(path: Path) -> dict:
    """The run's id, group, name, job type, config, history rows, summary (its latest values) and
    artifacts (per artifact: its ``files``, path in the artifact -> the local file staged for
    upload, its ``type``, ``aliases`` and ``metadata``), as W&B recorded them."""
    contents: dict = {"config": {}, "history": [], "summary": {}, "artifacts": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            contents |= {
                "id": record.run.run_id,
                "group": record.run.run_group,
                "name": record.run.display_name,
                "job_type": record.run.job_type,
            }
            contents["config"] |= {
                item_key(i): json.loads(i.value_json) for i in record.run.config.update
            }
        elif kind == "config":
            contents["config"] |= {
                item_key(i): json.loads(i.value_json) for i in record.config.update
            }
        elif kind == "artifact":
            artifact = record.artifact
            contents["artifacts"].append(
                {
                    "files": {e.path: e.local_path for e in artifact.manifest.contents},
                    "type": artifact.type,
                    "aliases": list(artifact.aliases),
                    "metadata": json.loads(artifact.metadata or "{}"),
                }
            )
        elif kind == "summary":
            contents["summary"] |= {
                item_key(i): json.loads(i.value_json) for i in record.summary.update
            }
        elif kind == "history":
            contents["history"].append(
                {item_key(i): json.loads(i.value_json) for i in record.history.item}
            )
    return contents
