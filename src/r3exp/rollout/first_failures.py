"""The paper's first-failure dataset: rejection-sample k attempts per example, keep the failures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from r3exp.errors import ConfigError
from r3exp.rollout.engines.interface import GenerationEngine, SamplingConfig
from r3exp.rollout.episodes import ChatRenderer
from r3exp.tasks.base import Task
from r3exp.tasks.hub import write_jsonl

RULES = ("all_fail", "any_fail")


def collect_failures(
    task: Task,
    engine: GenerationEngine,
    tokenizer,
    examples: Sequence[dict],
    sampling: SamplingConfig,
    attempts: int = 1,
    rule: str = "all_fail",
    batch_size: int = 64,
) -> tuple[list[dict], dict]:
    """Rows ``{"example", "attempt", "failed_attempts"}`` for the examples the policy fails.

    ``rule``: ``all_fail`` keeps an example when all ``attempts`` samples fail (hard examples, the
    paper's choice of examples the model cannot solve); ``any_fail`` keeps it when at least one fails.
    The stored ``attempt`` is the first failed sample.
    """
    if rule not in RULES:
        raise ConfigError(f"failures.rule={rule!r}; expected one of {RULES}")
    render = ChatRenderer(tokenizer)
    rows: list[dict] = []
    for start in tqdm(range(0, len(examples), batch_size), desc="first-failure dataset", unit="batch"):
        chunk = examples[start : start + batch_size]
        prompts = [render.for_task(task, ex, task.first_attempt_messages(ex)) for ex in chunk]
        for example, samples in zip(chunk, engine.generate(prompts, attempts, sampling, stream="failures")):
            failed = [s.text for s in samples if not task.validate(example, s.text)]
            keep = len(failed) == len(samples) if rule == "all_fail" else bool(failed)
            if keep:
                rows.append({"example": example, "attempt": failed[0], "failed_attempts": len(failed)})
    stats = {
        "examples": len(examples),
        "kept": len(rows),
        "attempts": attempts,
        "rule": rule,
        "kept_fraction": len(rows) / max(len(examples), 1),
    }
    return rows, stats


def write_failures(rows: list[dict], path: str | Path) -> Path:
    return write_jsonl(rows, path)
