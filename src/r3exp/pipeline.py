"""The modes of ``python -m r3exp``: each builds what it needs from the composed config and runs it."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r3exp.errors import ConfigError
from r3exp.evaluation import EvalResult, evaluate, format_table, save_results
from r3exp.models import ModelSpec, load_tokenizer
from r3exp.models.export import save_policy
from r3exp.rollout.episodes import Episode, R3Protocol
from r3exp.rollout.failures import collect_failures, write_failures
from r3exp.tasks.base import Task

log = logging.getLogger(__name__)
MODES = ("main", "evaluate", "train", "failures")


def setup_environment() -> None:
    """Defaults for machines without network or accounts; explicit environment variables win."""
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class Components:
    task: Task
    model: ModelSpec
    model_path: str
    tokenizer: Any
    engine: Any


def build_components(cfg: DictConfig) -> Components:
    from r3exp.embedded import tiny_corpus

    task = instantiate(cfg.task)
    model: ModelSpec = instantiate(cfg.model)
    path = model.resolve(cfg.paths.cache_dir, corpus=tiny_corpus)
    tokenizer = load_tokenizer(path)  # fails fast, in one line, when the hub is unreachable
    engine = instantiate(cfg.engine)(model_path=path, seed=cfg.seed)
    return Components(task, model, path, tokenizer, engine)


def run_evaluation(cfg: DictConfig, parts: Components, label: str) -> EvalResult:
    ev = cfg.evaluation
    protocol = R3Protocol(parts.task, parts.engine, parts.tokenizer, instantiate(ev.attempt),
                          instantiate(ev.reflection), instantiate(ev.retry))
    examples = list(parts.task.examples(ev.split))[: ev.limit]
    result, episodes = evaluate(protocol, examples, ev.split, ev.batch_size, description=f"evaluate {label}")
    write_episodes(episodes, Path(cfg.paths.output_dir) / f"eval_{label}_episodes.jsonl")
    return result


def write_episodes(episodes: list[Episode], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for ep in episodes:
            handle.write(json.dumps({
                "example": ep.example, "attempt": ep.attempt.text, "first_try_success": ep.first_try_success,
                "reflection": ep.reflections[0].text if ep.reflections else None,
                "retry": ep.retries[0].text if ep.retries else None,
                "retry_success": ep.retry_successes[0] if ep.retry_successes else None,
            }) + "\n")


def build_logger(cfg: DictConfig):
    if not cfg.get("logger"):
        return False
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    if cfg.ckpt_path is None:
        return None
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.exists():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no checkpoint at {path}")
    return str(path)


def run_training(cfg: DictConfig, parts: Components, logger, extra_callbacks: list | None = None) -> dict[str, Path]:
    policy = parts.model.load(parts.model_path)
    optimizer = instantiate(cfg.optimizer.optimizer)
    scheduler = instantiate(cfg.optimizer.scheduler) if cfg.optimizer.get("scheduler") else None
    module = instantiate(cfg.grpo)(policy=policy, engine=parts.engine, optimizer=optimizer, scheduler=scheduler)
    datamodule = instantiate(cfg.rollout)(task=parts.task, engine=parts.engine, tokenizer=parts.tokenizer)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + list(extra_callbacks or [])
    trainer: L.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
    return save_policy(module.policy, parts.tokenizer, Path(cfg.paths.output_dir) / "policy")


def run_failures(cfg: DictConfig, parts: Components) -> Path:
    sampling = instantiate(cfg.rollout.attempt)
    rows, stats = collect_failures(parts.task, parts.engine, parts.tokenizer, list(parts.task.examples("train")),
                                   sampling, cfg.failures.attempts, cfg.failures.rule)
    path = write_failures(rows, cfg.failures.output)
    Path(path).with_suffix(".stats.json").write_text(json.dumps(stats, indent=2))
    print(f"first-failure dataset: kept {stats['kept']} of {stats['examples']} examples -> {path}")
    return path


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.mode``; returns what it produced (results, paths) for callers and tests."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; expected one of {MODES}")
    setup_environment()
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    parts = build_components(cfg)
    produced: dict[str, Any] = {"output_dir": output_dir}
    try:
        if cfg.mode == "failures":
            produced["failures"] = run_failures(cfg, parts)
            return produced
        results: dict[str, EvalResult] = {}
        logger = build_logger(cfg) if cfg.mode in ("main", "train") else False
        if cfg.mode in ("main", "evaluate"):
            results["base" if cfg.mode == "main" else parts.model.name] = run_evaluation(cfg, parts, "base")
        if cfg.mode in ("main", "train"):
            produced["policy"] = run_training(cfg, parts, logger)
        if cfg.mode == "main":
            results["trained"] = run_evaluation(cfg, parts, "trained")
        if results:
            produced["results"] = results
            produced["results_path"] = save_results(results, output_dir / "results.json")
            print(f"\n{parts.task.name} · {parts.model.name} · {cfg.evaluation.split} split\n{format_table(results)}")
            if logger:
                logger.log_metrics({f"eval/{name}/{key}": value for name, r in results.items()
                                    for key, value in r.to_dict().items() if isinstance(value, (int, float))})
        return produced
    finally:
        parts.engine.close()
        finish_wandb()


def finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
