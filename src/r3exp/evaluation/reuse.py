"""Results that depend only on their inputs, kept and reused across runs: the base model's evaluation.

In a sweep, every job evaluates the same base model on the same test split with the same greedy
settings (``experiment=r3_smollm2``: nine jobs, byte-identical ``eval_base_episodes.jsonl`` and lm-eval
scores), 2-3 minutes of each job on a CPU. A :class:`ResultStore` keeps such a result under a key of
everything it was computed from (:func:`inputs_key`): the model's files and local data (:func:`path_fingerprint`), the
task, the evaluation and engine settings, the number of ranks, the code (:func:`code_identity`) and
library versions, and the seed when anything is sampled at a temperature above 0. A run whose inputs
have the same key reads the stored result instead of computing it again; any change of input gives
another key, so nothing stale is read.
``evaluation.reuse_base`` / ``forgetting.reuse_base`` switch it off; ``paths.results_cache`` says where.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Callable

from r3exp.cache_entries import staged_entry

STORE_VERSION = 1  # bump when what is stored, or how it is computed, changes meaning
LIBRARIES = ("r3exp", "torch", "transformers", "vllm", "lm_eval")
INPUTS_FILE = "inputs.json"  # written last: an entry without it is incomplete and never read


def library_versions() -> dict[str, str | None]:
    """The installed versions of the libraries a stored result's numbers depend on."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_identity(directory: str | Path) -> dict[str, str] | None:
    """The code a result was computed with, when r3exp runs from a git checkout: the commit and a hash of
    the uncommitted changes to tracked files (an installed r3exp is identified by its version)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=30, check=True
        ).stdout

    try:
        return {
            "commit": git("rev-parse", "HEAD").strip(),
            "changes": hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()[:20],
        }
    except (OSError, subprocess.SubprocessError):
        return None


def path_fingerprint(path: str | Path) -> list | str:
    """What identifies a model's weights or a data file without reading them: a local file's absolute path,
    size and modification time, a local directory's path and each of its files' (name, size, modification
    time, one level down); anything else (a hub id) as given."""
    local = Path(path)
    if local.is_file():
        return [str(local.resolve()), local.stat().st_size, local.stat().st_mtime_ns]
    if not local.is_dir():
        return str(path)
    files = sorted(f for f in local.iterdir() if f.is_file())
    return [str(local.resolve()), *([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files)]


def inputs_key(inputs: dict) -> str:
    """A short hash of the inputs (JSON with sorted keys)."""
    payload = json.dumps([STORE_VERSION, inputs], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


class ResultStore:
    """Stored results, one directory per key under ``root/<kind>/``; an entry is written into a temporary
    directory and renamed into place, so a crash or a concurrent job never leaves a half-written one."""

    def __init__(self, root: str | Path, kind: str):
        self.root = Path(root) / kind

    def entry(self, inputs: dict) -> Path:
        return self.root / inputs_key(inputs)

    def load(self, inputs: dict) -> Path | None:
        """The stored entry for these inputs, or None."""
        entry = self.entry(inputs)
        return entry if (entry / INPUTS_FILE).exists() else None

    def save(self, inputs: dict, fill: Callable[[Path], None]) -> Path:
        """Store a result: ``fill`` writes its files into the (new) entry directory."""
        entry = self.entry(inputs)
        with staged_entry(entry, prefix=f".{entry.name}.") as staging:  # another job's entry, first, is kept
            fill(staging)
            (staging / INPUTS_FILE).write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str))
        return entry
