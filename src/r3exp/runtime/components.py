"""The run's parts: the task, the model (built and warm-started on first use for the embedded one), its
tokenizer, the engine, and how the ranks share engines."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp import distributed
from r3exp.distributed import Ranks
from r3exp.embedded import tiny_corpus
from r3exp.errors import ConfigError
from r3exp.models import ModelSpec, load_tokenizer
from r3exp.scripted_sft import SHIPPED, ensure_warm_start
from r3exp.tasks.base import Task
from r3exp.timing import PhaseTimes

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What a mode works with: the task, the model spec and its weights' directory (or hub id), the
    tokenizer, the engine, and how the ranks share engines (handed to the datamodule and the trainer)."""

    task: Task
    model: ModelSpec
    model_path: str
    tokenizer: Any
    engine: Any
    ranks: Ranks = field(default_factory=Ranks)


def build_components(cfg: DictConfig, phases: PhaseTimes | None = None, ranks: Ranks | None = None) -> Components:
    """The task, model, tokenizer and engine of ``cfg``; ``ranks`` (default: one engine per rank) as
    :func:`r3exp.runtime.launch.launch` found them."""
    phases, ranks = phases or PhaseTimes(), ranks or Ranks()
    task, model, path = resolve_model(cfg, phases)
    with phases("engine start"):
        tokenizer = load_tokenizer(path)  # fails fast, in one line, when the hub is unreachable
        # each engine samples its own stream (its seed); the first engine's equals a single process's
        engine = instantiate(cfg.engine)(model_path=path, seed=cfg.seed + ranks.data_rank, ranks=ranks)
    return Components(task, model, path, tokenizer, engine, ranks)


def resolve_model(cfg: DictConfig, phases: PhaseTimes | None = None) -> tuple[Task, ModelSpec, str]:
    """The task, the model spec and the model's directory (or hub id): the embedded model is built, and
    warm-started, on first use."""
    phases = phases or PhaseTimes()
    task = instantiate(cfg.task)
    model: ModelSpec = instantiate(cfg.model)
    if not distributed.is_main():
        distributed.barrier()  # several ranks: rank 0 builds what the cache lacks, the others then read it
    with phases("model build"):
        path = model.resolve(cfg.paths.cache_dir, corpus=tiny_corpus)
    if model.is_embedded and model.warm_start is not None:
        with phases("warm start"):
            path = resolve_warm_start(cfg, task, model, path)
    if distributed.is_main():
        distributed.barrier()
    return task, model, path


def warm_start_task_settings(cfg: DictConfig, task: Task) -> dict:
    """The task settings a warm start depends on (part of its key)."""
    settings = OmegaConf.to_container(cfg.task, resolve=True)
    if task.scripted_episodes_ignore_splits:  # one warm start for every seed and split size
        settings.pop("seed", None)
        settings.pop("split_sizes", None)
    return settings


def resolve_warm_start(cfg: DictConfig, task: Task, model: ModelSpec, base_path: str) -> str:
    """The warm-started embedded model: from ``warm_start_path`` (``mode=warmstart``'s output, e.g. the
    DVC stage) when set, else the one shipped with the package for these inputs, else built once and cached
    under ``paths.cache_dir/warmstart``."""
    if cfg.get("warm_start_path"):
        built = Path(cfg.warm_start_path) / "model"
        if not (built / "config.json").exists():
            raise ConfigError(f"warm_start_path={cfg.warm_start_path!r}: no model there (build it with mode=warmstart)")
        return str(built)
    if not task.scripted_episodes(1, 0):
        log.warning(
            "task %r has no scripted episodes (Task.scripted_episodes): no warm start, the embedded "
            "model starts untrained",
            task.name,
        )
        return base_path
    settings = warm_start_task_settings(cfg, task)
    shipped = None if cfg.get("mode") == "warmstart" else SHIPPED  # mode=warmstart rebuilds (into the cache)
    return str(
        ensure_warm_start(base_path, task, settings, model.warm_start, Path(cfg.paths.cache_dir) / "warmstart", shipped)
    )
