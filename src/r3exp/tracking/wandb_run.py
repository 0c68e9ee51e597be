"""What a run adds to W&B beyond step metrics: the evaluation table and samples, the provenance record,
and artifacts for the dataset and the exported policy. Each function is a no-op without a W&B logger
(``logger=csv``, ``logger=none``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from lightning.pytorch.loggers import WandbLogger

from r3exp import keys
from r3exp.records import EPISODE_FIELDS
from r3exp.tracking.metrics_file import COLUMNS, FILENAME, read_metrics
from r3exp.tracking.offline_run import OfflineRunError, read_offline_run

EVAL_COLUMNS = ("model", "split", "n", "first_try", "after_reflection", "delta")
EVAL_GROUP_COLUMNS = ("model", "category", "n", "first_try", "after_reflection", "delta")
EVAL_SAMPLE_COLUMNS = ("model", *(f for f in EPISODE_FIELDS if f != "example"))


def wandb_run(logger):
    """The W&B run behind a Lightning logger, or None."""
    return logger.experiment if isinstance(logger, WandbLogger) else None


def log_evaluation(logger, results: dict[str, dict], samples: dict[str, Sequence[dict]], max_rows: int = 100) -> None:
    """The paper's table (one row per evaluated model) as a W&B table and summary values, plus up to
    ``max_rows`` episodes per model. ``results``: label -> ``EvalResult.to_dict()``; ``samples``:
    label -> episode rows as written to ``eval_<label>_episodes.jsonl``."""
    run = wandb_run(logger)
    if run is None:
        return
    import wandb  # noqa: PLC0415 - wandb is optional (r3exp[wandb])

    rows = [
        [
            label,
            r["split"],
            r["total"],
            r["first_try_accuracy"],
            r["after_reflection_accuracy"],
            r["after_reflection_accuracy"] - r["first_try_accuracy"],
        ]
        for label, r in results.items()
    ]
    episodes = [
        [label, *(row.get(c) for c in EVAL_SAMPLE_COLUMNS[1:])]
        for label, label_rows in samples.items()
        for row in list(label_rows)[:max_rows]
    ]
    tables = {
        "evaluation": wandb.Table(columns=list(EVAL_COLUMNS), data=rows),
        "evaluation_samples": wandb.Table(columns=list(EVAL_SAMPLE_COLUMNS), data=episodes),
    }
    by_group = [
        [
            label,
            group,
            g["total"],
            g["first_try_accuracy"],
            g["after_reflection_accuracy"],
            g["after_reflection_accuracy"] - g["first_try_accuracy"],
        ]
        for label, r in results.items()
        for group, g in (r.get("groups") or {}).items()
    ]
    if by_group:  # BFCL: one row per model and category
        tables["evaluation_by_category"] = wandb.Table(columns=list(EVAL_GROUP_COLUMNS), data=by_group)
    run.log(tables)
    for label, r in results.items():
        for key in ("first_try_accuracy", "after_reflection_accuracy", "total"):
            run.summary[keys.eval_key(label, key)] = r[key]
            for group, g in (r.get("groups") or {}).items():
                run.summary[keys.eval_key(label, f"{group}/{key}")] = g[key]


def backfill_history(logger, run_dir: str | Path, resumed_step: int) -> list[int]:
    """After a crash, W&B's history ends where its service last wrote (a kill -9 loses what was in
    flight), while ``train_metrics.csv`` is written at every step. Before a resumed run trains, log the
    steps below ``resumed_step`` that the run's earlier W&B files lack, from the CSV (its metrics, at
    their ``trainer/global_step``), so that the run's history has no gap. Returns the steps logged."""
    run = wandb_run(logger)
    metrics_file = Path(run_dir) / FILENAME
    if run is None or not metrics_file.exists():
        return []
    logged: set[int] = set()
    current = Path(run.dir).parent.resolve()
    for directory in sorted((Path(run_dir) / "wandb").glob("*run-*")):
        if directory.resolve() == current or not directory.is_dir():
            continue
        try:
            logged |= {step for step, _ in read_offline_run(directory).metric(keys.REWARD_MEAN)}
        except OfflineRunError:
            continue
    missing = [
        row for row in read_metrics(metrics_file) if row["step"] < resumed_step and int(row["step"]) not in logged
    ]
    for row in missing:
        values = {key: row[column] for column, key in COLUMNS.items() if row.get(column) is not None}
        run.log({**values, "trainer/global_step": int(row["step"])})
    return [int(row["step"]) for row in missing]


def log_forgetting(logger, scores: dict[str, dict[str, float]]) -> None:
    """The lm-eval scores (label -> ``<task>/<metric>`` -> value) as run summary values
    (``forgetting/<label>/<task>/<metric>``, and ``forgetting/difference/...`` = trained - base) and a
    table with one row per benchmark metric."""
    run = wandb_run(logger)
    if run is None or not scores:
        return
    import wandb  # noqa: PLC0415 - wandb is optional (r3exp[wandb])

    base, trained = scores.get(keys.BASE, {}), scores.get(keys.TRAINED, {})
    for label, values in scores.items():
        for key, value in values.items():
            run.summary[f"forgetting/{label}/{key}"] = value
    rows = []
    for key in sorted(set(base) | set(trained)):
        difference = trained[key] - base[key] if key in base and key in trained else None
        if difference is not None:
            run.summary[f"forgetting/difference/{key}"] = difference
        rows.append([key, base.get(key), trained.get(key), difference])
    run.log({"forgetting": wandb.Table(columns=["benchmark", keys.BASE, keys.TRAINED, "difference"], data=rows)})


def log_provenance(logger, record: dict) -> None:
    run = wandb_run(logger)
    if run is not None:
        run.config.update({"provenance": record}, allow_val_change=True)


def artifact_name(text: str) -> str:
    """W&B artifact names allow letters, digits, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "artifact"


def log_dataset_artifact(logger, task_name: str, source: str, metadata: dict) -> None:
    """The task's data as a W&B artifact. A local file or split directory (e.g. the DVC ``data``
    stage's output) is added by reference: W&B records its checksums and path, stores no copy.
    A generated or hub dataset is described by its metadata (source, seed, sizes), which rebuild it."""
    run = wandb_run(logger)
    if run is None:
        return
    import wandb  # noqa: PLC0415 - wandb is optional (r3exp[wandb])

    artifact = wandb.Artifact(artifact_name(f"{task_name}-data"), type="dataset", metadata=metadata)
    path = Path(source).expanduser()
    if path.exists():
        artifact.add_reference(path.resolve().as_uri(), name=path.name)
    else:
        with artifact.new_file("source.json") as handle:
            handle.write(json.dumps(metadata, indent=2))
    run.log_artifact(artifact)


def log_policy_artifact(logger, name: str, policy_dir: str | Path, metadata: dict) -> None:
    """The exported policy (``policy/merged``, and ``policy/adapter`` for LoRA) as a reference artifact."""
    run = wandb_run(logger)
    if run is None:
        return
    import wandb  # noqa: PLC0415 - wandb is optional (r3exp[wandb])

    artifact = wandb.Artifact(artifact_name(name), type="model", metadata=metadata)
    artifact.add_reference(Path(policy_dir).resolve().as_uri(), name="policy")
    run.log_artifact(artifact)
