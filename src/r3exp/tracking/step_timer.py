"""Per-step wall-clock split: generation (rollout), weight sync and training (forward, backward, step)."""
from __future__ import annotations

import time

import lightning as L

from r3exp import keys


class StepTimer(L.Callback):
    """Logs ``time/step_seconds`` and ``time/train_seconds`` (step minus generation minus sync, from the
    module's :class:`~r3exp.records.StepRecord`), and keeps every step's figures in ``history`` for
    benchmarks."""

    def __init__(self):
        self.history: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        total = time.perf_counter() - self._start
        record = module.last_step  # r3exp.records.StepRecord
        generation, sync = record.generation_seconds, record.sync_seconds
        row = {"step": trainer.global_step, "time/step_seconds": total, "time/generation_seconds": generation,
               keys.SYNC_SECONDS: sync, "time/train_seconds": max(total - generation - sync, 0.0),
               "generated_tokens_per_second": record.rollout_stats.get(keys.GENERATED_TOKENS_PER_SECOND, 0.0),
               "trained_tokens": float(record.trained_tokens)}
        self.history.append(row)
        if trainer.logger:
            trainer.logger.log_metrics({k: v for k, v in row.items() if k.startswith("time/")}, step=trainer.global_step)
