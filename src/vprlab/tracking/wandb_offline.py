"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) without the network.

Reports and tests use this to check what an offline run recorded before it is synced.
The file is a 7-byte header (``:W&B``, magic, version) followed by LevelDB-log records
(32 KiB blocks; each chunk: crc32, length, type) holding protobuf ``Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (missing ':W&B' header)")
    records, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        if kind == 0 and length == 0:
            continue
        pending += data[pos : pos + length]
        pos += length
        if kind in (_FULL, _LAST):
            records.append(pending)
            pending = b""
    return records


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """``{"summary": {...}, "history": [{...}, ...], "config": {...}, "run": {...}}`` of an offline run.

    ``run`` holds what identifies the run in W&B: ``id``, ``project``, ``group``, ``name``, ``tags``.

    ``path`` is the ``offline-run-*`` folder or the ``.wandb`` file inside it.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"no run-*.wandb file in '{path}'")
        path = files[0]
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for raw in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "run":
            config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
            info = record.run
            run.update({
                "id": info.run_id, "project": info.project, "group": info.run_group or None,
                "name": info.display_name or None, "tags": list(info.tags),
            })
    return {"summary": summary, "history": history, "config": config, "run": run}
