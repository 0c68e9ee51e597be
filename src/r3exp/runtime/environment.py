"""What every run shares before its work: the environment, the run directory, the local files a run reads,
the Hydra job's overrides."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from r3exp.console.library_logs import quiet_library_environment
from r3exp.errors import ConfigError
from r3exp.host_memory import reuse_freed_memory

CODE_DIR = Path(__file__).resolve().parents[3]  # the checkout (for the git commit; none when installed)


def setup_environment(verbose: bool = False, keep_freed_memory: bool = True) -> None:
    """Defaults for machines without network or accounts, and (unless ``verbose``) a quiet console;
    explicit environment variables win. ``keep_freed_memory``: glibc's ``malloc`` keeps freed memory for
    reuse (:mod:`r3exp.host_memory`; the ``reuse_freed_memory`` key)."""
    if keep_freed_memory:
        reuse_freed_memory()
    if not verbose:
        quiet_library_environment()
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def output_dir(cfg: DictConfig) -> Path:
    """The run's directory (``paths.output_dir``; the Hydra entry point fills it with the run dir): read once,
    by :func:`r3exp.runtime.launch.launch`, into :attr:`Run.run_dir <r3exp.runtime.run.Run>`."""
    if cfg.paths.get("output_dir") is None:
        raise ConfigError("paths.output_dir is not set (python -m r3exp sets it to the Hydra run directory)")
    return Path(cfg.paths.output_dir)


def local_data_paths(cfg: DictConfig) -> list[str]:
    """The local files a run reads: the task's data (a file or split directory) and a first-failure dataset."""
    paths = [
        cfg.task.get("source"),
        cfg.rollout.get("failures_path") if cfg.rollout.get("source") == "failures" else None,
    ]
    return [p for p in paths if p and Path(str(p)).exists()]


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (what distinguishes it within a sweep)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
