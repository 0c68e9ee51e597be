"""Read what W&B wrote for a run, without a server: the ``run-<id>.wandb`` transaction log of an offline
(or not yet synced) run. ``wandb.Api`` needs a synced run; this reads the local files, so tests,
``mode=compare`` and notebooks can inspect offline runs.

The log is LevelDB's log format as W&B writes it: a 7-byte file header (``:W&B``, magic 0xBEE1,
version 0), then 32 KiB blocks of records, each ``crc32 (4) | length (2) | type (1) | data``; a
protobuf ``wandb.Record`` may span several records (FIRST, MIDDLE..., LAST).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class OfflineRunError(ValueError):
    """The file is not a W&B run log, or it is corrupt."""


def iter_records(path: str | Path) -> Iterator[bytes]:
    """The raw protobuf records of a ``.wandb`` file, in order (a torn final record is dropped)."""
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER]) if len(data) >= HEADER else (b"", 0, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise OfflineRunError(f"{path}: not a W&B run log (header {data[:HEADER]!r})")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # the block's tail is padding
            pos += room
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += room
            continue
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != checksum:
            if pos + HEADER + length >= len(data):
                return  # the writer was interrupted mid-record
            raise OfflineRunError(f"{path}: corrupt record at byte {pos}")
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def _value(json_text: str) -> Any:
    try:
        return json.loads(json_text)
    except json.JSONDecodeError:
        return json_text


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """A run read back from its files: config, history rows, summary, artifacts and logged tables."""

    directory: Path
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    group: str = ""
    name: str = ""

    def table(self, key: str) -> dict[str, Any]:
        """The last version of the table logged under ``key``: ``{"columns": [...], "data": [[...]]}``."""
        paths = [row[f"{key}/path"] for row in self.history if row.get(f"{key}/_type") == "table-file"]
        if not paths:
            raise KeyError(f"no table {key!r} in {self.directory}")
        return json.loads((self.directory / "files" / paths[-1]).read_text())

    def metric(self, key: str) -> list[tuple[int, float]]:
        """``(trainer/global_step or _step, value)`` for every history row that has ``key``."""
        return [
            (int(row.get("trainer/global_step", row.get("_step", 0))), row[key]) for row in self.history if key in row
        ]


def read_offline_run(directory: str | Path) -> OfflineRun:
    """Read ``directory`` (``wandb/offline-run-...`` or ``wandb/run-...``) into an :class:`OfflineRun`."""
    from wandb.proto import wandb_internal_pb2 as pb  # noqa: PLC0415 - wandb is optional (r3exp[wandb])

    directory = Path(directory)
    logs = sorted(directory.glob("run-*.wandb"))
    if not logs:
        raise OfflineRunError(f"{directory}: no run-*.wandb file (is this a W&B run directory?)")
    run = OfflineRun(directory)
    for raw in iter_records(logs[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.group, run.name = record.run.run_id, record.run.run_group, record.run.display_name
            run.tags = list(record.run.tags)
            for item in record.run.config.update:
                run.config[_key(item)] = _value(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = _value(item.value_json)
        elif kind == "history":
            run.history.append({_key(item): _value(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = _value(item.value_json)
        elif kind == "artifact":
            art = record.artifact
            run.artifacts.append(
                {
                    "name": art.name,
                    "type": art.type,
                    "metadata": _value(art.metadata or "{}"),
                    "entries": {e.path: e.ref for e in art.manifest.contents},
                }
            )
    for key, value in run.config.items():  # W&B stores each top-level key as {"value": ..., "desc": ...}
        if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value:
            run.config[key] = value["value"]
    return run
