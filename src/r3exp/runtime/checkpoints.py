"""The checkpoint a training run resumes from: ``ckpt_path`` resolved against the run directory, and the step it
was saved at, read (without its tensors) before the engine starts."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from r3exp.errors import ConfigError
from r3exp.runtime.run import Resume


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path``: None (start), a path, ``last`` (the run directory's last.ckpt, which must exist) or
    ``auto`` (it when it exists, else start: a requeued job resumes, a new one starts)."""
    if cfg.ckpt_path is None:
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path == "auto":
        return str(last) if last.exists() else None
    path = last if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.exists():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no checkpoint at {path}")
    return str(path)


def resolve_resume(cfg: DictConfig, run_dir: Path) -> Resume | None:
    """Where the run continues from, checked readable now (before the engine starts); None: it starts."""
    path = resolve_ckpt_path(cfg, run_dir)
    return Resume(path, checkpoint_step(path)) if path else None


def checkpoint_step(path: str) -> int:
    """The global step a Lightning checkpoint was written at (a file, or a sharded checkpoint's directory),
    read without loading its tensors, with torch's safe loader (a checkpoint never runs code). A file that
    is not a readable checkpoint is a :class:`ConfigError` naming it."""
    meta = Path(path) / "meta.pt" if Path(path).is_dir() else Path(path)
    if meta.is_file() and not zipfile.is_zipfile(meta):
        raise ConfigError(
            f"ckpt_path: {meta} is not a Lightning checkpoint (not a torch zip archive: truncated, "
            "corrupt or another format)"
        )
    try:
        return int(torch.load(meta, map_location="cpu", weights_only=True, mmap=not Path(path).is_dir())["global_step"])
    except Exception as err:  # noqa: BLE001 - torch's message advises weights_only=False, which r3exp never does
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"ckpt_path: {meta} is not a readable Lightning checkpoint ({type(err).__name__}: {reason})"
        ) from None
