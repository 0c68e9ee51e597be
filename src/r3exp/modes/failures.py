"""``mode=failures``: the first-failure dataset (the paper's training data for R3)."""
from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from r3exp.modes.components import Components
from r3exp.modes.registry import RunContext, RunResult, mode
from r3exp.modes.setup import output_dir
from r3exp.rollout.failures import collect_failures, write_failures


@mode("failures")
def failures_mode(cfg: DictConfig, ctx: RunContext) -> RunResult:
    return RunResult(ctx.run_dir, failures=run_failures(cfg, ctx.parts))


def run_failures(cfg: DictConfig, parts: Components) -> Path:
    sampling = instantiate(cfg.rollout.attempt, temperature=cfg.failures.temperature)
    rows, stats = collect_failures(parts.task, parts.engine, parts.tokenizer, list(parts.task.examples("train")),
                                   sampling, cfg.failures.attempts, cfg.failures.rule)
    path = write_failures(rows, cfg.failures.output or output_dir(cfg) / "failures.jsonl")
    Path(path).with_suffix(".stats.json").write_text(json.dumps(stats, indent=2))
    print(f"first-failure dataset: kept {stats['kept']} of {stats['examples']} examples -> {path}")
    return path
