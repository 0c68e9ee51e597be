"""Read compared runs back from W&B (online): the runs of a group, their config, evaluation summary and
training curves, as :class:`r3exp.results.across_runs.RunResult` (what ``mode=compare`` reads from run
directories offline)."""

from __future__ import annotations

import os
from pathlib import Path

from r3exp import keys
from r3exp.errors import ConfigError
from r3exp.results.across_runs import RunResult
from r3exp.tracking.metrics_file import COLUMNS as CURVE_COLUMNS


def runs_from_wandb(entity: str | None, project: str, group: str) -> list[RunResult]:
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or not os.environ.get("WANDB_API_KEY"):
        raise ConfigError(
            f"compare.wandb_group={group!r} reads runs from the W&B server, which needs a network "
            "and WANDB_API_KEY; offline, use compare.runs=<multirun directory>"
        )
    import wandb  # noqa: PLC0415 - wandb is optional (r3exp[wandb])

    api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    results = []
    for run in api.runs(path, filters={"group": group}):
        summary, config = run.summary, run.config
        accuracy = {
            f"{label}_{kind}": summary[keys.eval_key(label, key)]
            for label in keys.COMPARED
            for kind, key in (("first_try", "first_try_accuracy"), ("after_reflection", "after_reflection_accuracy"))
            if keys.eval_key(label, key) in summary
        }
        history = run.history(keys=["trainer/global_step", *CURVE_COLUMNS.values()], pandas=False)
        curves = [
            {
                "step": row.get("trainer/global_step", 0),
                **{column: row.get(key) for column, key in CURVE_COLUMNS.items()},
            }
            for row in history
        ]
        results.append(
            RunResult(
                directory=Path(run.url),
                task=config.get("task", {}).get("name", "?"),
                model=config.get("model", {}).get("name", "?"),
                seed=int(config.get("seed", 0)),
                overrides=list(config.get("overrides") or []),
                accuracy=accuracy,
                total=int(
                    summary.get(keys.eval_key(keys.TRAINED, "total"), summary.get(keys.eval_key(keys.BASE, "total"), 0))
                ),
                curves=curves,
            )
        )
    if not results:
        raise ConfigError(f"no W&B runs in group {group!r} of project {path!r}")
    return results
