"""Load a task's rows from the Hugging Face hub or a local file, with fixed, seeded, disjoint splits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from r3exp.errors import R3Error


class DataUnavailable(R3Error):
    """The dataset cannot be reached (no network, gated without a token, or a missing file)."""


def load_hub_rows(
    source: str, split: str, split_sizes: dict[str, int], seed: int, required: Sequence[str]
) -> list[dict]:
    """Rows of ``split`` from ``source``: a hub id, a local file, or a directory of split files.

    A directory holds ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (as ``mode=data`` writes
    them, e.g. the DVC pipeline's ``data`` stage); its rows are used as they are, up to the split's size.
    Otherwise the whole dataset is shuffled once with ``seed``; ``test`` takes the first rows, ``validation`` the
    next, ``train`` the rest (capped at its size), so the splits are disjoint and stable.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return read_split_file(path / f"{split}.jsonl", int(split_sizes.get(split, 0)) or None, required)
    import datasets  # noqa: PLC0415 - datasets is optional (r3exp[data]); a split directory does without it

    try:
        if path.exists():
            fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
            if fmt is None:
                raise DataUnavailable(f"{path}: unsupported file type (use .json, .jsonl, .parquet, .csv)")
            if path.suffix == ".jsonl":  # read here, so that a bad row is named by its line
                data = datasets.Dataset.from_list(read_split_file(path, None, required))
            else:
                data = datasets.load_dataset(fmt, data_files=str(path), split="train")
        else:
            data = datasets.load_dataset(source, split="train", token=os.environ.get("HF_TOKEN"))
    except DataUnavailable:
        raise
    except Exception as err:  # datasets raises many types for "offline", "gated", "not found"
        raise DataUnavailable(
            f"cannot load dataset {source!r}: {type(err).__name__}: {str(err).splitlines()[0][:200]} "
            "(no network or hub access? use task.source=generated, or a local file path)"
        ) from None
    missing = [key for key in required if key not in data.column_names]
    if missing:
        raise DataUnavailable(f"dataset {source!r} lacks required column(s) {missing}; has {data.column_names}")
    data = data.shuffle(seed=seed)
    n_test, n_val = int(split_sizes.get("test", 0)), int(split_sizes.get("validation", 0))
    bounds = {
        "test": (0, n_test),
        "validation": (n_test, n_test + n_val),
        "train": (n_test + n_val, min(len(data), n_test + n_val + int(split_sizes.get("train", len(data))))),
    }
    start, stop = bounds[split]
    if start >= len(data):
        raise DataUnavailable(f"dataset {source!r} has {len(data)} rows, too few for split {split!r}")
    return [data[i] for i in range(start, min(stop, len(data)))]


def read_split_file(path: Path, limit: int | None, required: Sequence[str]) -> list[dict]:
    """The first ``limit`` rows of a JSONL split file, read as plain JSON (no schema inference)."""
    if not path.is_file():
        raise DataUnavailable(f"{path} does not exist (a split directory needs train/validation/test.jsonl)")
    rows = []
    with path.open() as handle:
        for line_no, line in enumerate(handle, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataUnavailable(f"{path}:{line_no}: not JSON ({err})") from None
            missing = [key for key in required if key not in row]
            if missing:
                raise DataUnavailable(f"{path}:{line_no}: missing field(s) {missing}")
            rows.append(row)
    return rows


def write_jsonl(rows: Sequence[dict], path: str | Path) -> Path:
    """One JSON object per line (split files, episode records, first-failure datasets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
