"""``mode=failures``: the first-failure dataset (the paper's training data for R3)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate

from r3exp.rollout.first_failures import collect_failures, write_failures
from r3exp.runtime.run import ModeResult, Run


def failures_mode(run: Run) -> ModeResult:
    """Sample ``failures.attempts`` first tries per training example; keep those ``failures.rule`` calls failed."""
    cfg, parts = run.cfg, run.parts
    sampling = instantiate(cfg.rollout.attempt, temperature=cfg.failures.temperature)
    rows, stats = collect_failures(
        parts.task,
        parts.engine,
        parts.tokenizer,
        list(parts.task.examples("train")),
        sampling,
        cfg.failures.attempts,
        cfg.failures.rule,
    )
    path = write_failures(rows, cfg.failures.output or run.run_dir / "failures.jsonl")
    Path(path).with_suffix(".stats.json").write_text(json.dumps(stats, indent=2))
    print(f"first-failure dataset: kept {stats['kept']} of {stats['examples']} examples -> {path}")
    return ModeResult(run.run_dir, failures=path)
