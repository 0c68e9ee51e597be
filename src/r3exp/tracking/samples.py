"""Reflection samples: what the model reflected on, what it retried, and what that earned, step by step.

Every ``every_n_steps`` steps the :class:`ReflectionSamples` callback takes whole GRPO groups from the
step's rollout, appends them to ``<run dir>/reflection_samples.jsonl`` (the complete record) and logs a
W&B table that keeps the history of all sampled steps (not just the latest, as TRL's table does).
The table is bounded: when it outgrows ``max_rows``, every other sampled step is dropped, so it keeps
spanning the whole run at a coarser stride. The history is saved in checkpoints, so a resumed run
keeps its table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from r3exp.rollout.batching import batch_rows
from r3exp.rollout.episodes import Episode
from r3exp.tasks.base import Task

SAMPLE_COLUMNS = (
    "step",
    "group",
    "task_prompt",
    "first_attempt",
    "reflection",
    "retry",
    "retry_success",
    "reward",
    "advantage",
    "reflection_tokens",
    "distilled",
)


def sample_rows(
    task: Task, episodes: Sequence[Episode], advantages: Sequence[float], step: int, limit: int
) -> list[dict]:
    """Rows of whole groups (all G reflections of a failure), in batch order, until ``limit`` rows.

    ``advantages`` are the batch's, one per row of :func:`r3exp.rollout.batching.batch_rows`."""
    rows: list[dict] = []
    for (episode, group, j), advantage in zip(batch_rows(episodes), advantages):
        if j == 0 and len(rows) + len(episode.reflections) > limit and rows:
            break
        rows.append(
            {
                "step": step,
                "group": group,
                "task_prompt": task.user_prompt(episode.example),
                "first_attempt": episode.attempt.text,
                "reflection": episode.reflections[j].text,
                # the grpo baseline trains sampled attempts (in ``reflections``) and makes no retry
                "retry": episode.retries[j].text if episode.retries else "",
                "retry_success": bool(episode.retry_successes[j]),
                "reward": float(episode.rewards[j]),
                "advantage": float(advantage),
                "reflection_tokens": len(episode.reflections[j].token_ids),
                # r3_grpo_distill: a rewarded retry trained as an answer to the task prompt (an attempt group's row)
                "distilled": episode.is_off_policy(j),
            }
        )
    return rows[:limit]


class ReflectionSamples(L.Callback):
    """Logs reflection samples every ``every_n_steps`` optimizer steps.

    Args:
        every_n_steps: sampling period, in steps (step 0 included).
        rows_per_step: at most this many rows (whole groups) per sampled step.
        max_rows: bound of the W&B table; the JSONL file keeps every sampled row.
        key: the W&B table's key.
        filename: the JSONL file in the run directory (``None``: no file).
    """

    def __init__(
        self,
        every_n_steps: int = 5,
        rows_per_step: int = 8,
        max_rows: int = 400,
        key: str = "reflection_samples",
        filename: str | None = "reflection_samples.jsonl",
    ):
        if every_n_steps < 1 or rows_per_step < 1 or max_rows < rows_per_step:
            raise ValueError("callbacks.reflection_samples: need every_n_steps >= 1 and max_rows >= rows_per_step >= 1")
        self.every_n_steps, self.rows_per_step, self.max_rows = every_n_steps, rows_per_step, max_rows
        self.key, self.filename = key, filename
        self.history: list[list[dict]] = []  # one list of rows per sampled step

    @property
    def rows(self) -> list[dict]:
        return [row for step_rows in self.history for row in step_rows]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        record = module.last_step  # r3exp.records.StepRecord
        if not record.drew_rollout or record.rollout_step % self.every_n_steps:
            return
        task = trainer.datamodule.task
        step_rows: list[dict] = []
        for rollout, advantages in zip(record.rollouts, record.advantages):
            room = self.rows_per_step - len(step_rows)
            if room > 0:
                step_rows += sample_rows(task, rollout.episodes, advantages.tolist(), record.rollout_step, room)
        if not step_rows:
            return
        self.add(step_rows)
        if trainer.is_global_zero:
            self._write(trainer, step_rows)
            self._log_table(trainer)

    def add(self, step_rows: list[dict]) -> None:
        """Append one sampled step; past ``max_rows``, drop every other older step (the newest stays)."""
        self.history.append(step_rows)
        while sum(map(len, self.history)) > self.max_rows and len(self.history) > 1:
            self.history = self.history[:-1][::2] + self.history[-1:]

    def _write(self, trainer, step_rows: list[dict]) -> None:
        if not self.filename:
            return
        path = Path(trainer.default_root_dir) / self.filename
        with path.open("a") as handle:
            for row in step_rows:
                handle.write(json.dumps(row) + "\n")

    def _log_table(self, trainer) -> None:
        data = [[row.get(c) for c in SAMPLE_COLUMNS] for row in self.rows]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(self.key, columns=list(SAMPLE_COLUMNS), data=data)

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
