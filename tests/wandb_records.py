"""Read back what an offline W&B run wrote: its ``.wandb`` file of protobuf records.

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB
blocks of records, each with a 7-byte header (crc32, length, type); a record too long for its
block is split into FIRST, MIDDLE... LAST pieces, and block tails under 7 bytes are padding.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B", f"{path} is not a W&B run file"
    out, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < HEADER:
            offset += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def run_contents(path: Path) -> dict:
    """The run's id, group, name, config and history rows, as W&B recorded them."""
    contents: dict = {"config": {}, "history": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            contents |= {
                "id": record.run.run_id,
                "group": record.run.run_group,
                "name": record.run.display_name,
            }
            contents["config"] |= {
                _key(i): json.loads(i.value_json) for i in record.run.config.update
            }
        elif kind == "config":
            contents["config"] |= {_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            contents["history"].append(
                {_key(i): json.loads(i.value_json) for i in record.history.item}
            )
    return contents
