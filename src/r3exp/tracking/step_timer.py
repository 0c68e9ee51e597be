"""Per-step wall-clock split: generation (rollout), weight sync and training (forward, backward, step)."""
from __future__ import annotations

import time

import lightning as L


class StepTimer(L.Callback):
    """Logs ``time/step_seconds`` and ``time/train_seconds`` (step minus generation minus sync), and keeps
    every step's figures in ``history`` for benchmarks."""

    def __init__(self):
        self.history: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()
        module.last_sync_seconds = 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        total = time.perf_counter() - self._start
        stats = getattr(module, "last_batch_stats", {}) or {}
        generation = stats.get("rollout/wall_seconds", 0.0) if module.drew_rollout else 0.0
        sync = getattr(module, "last_sync_seconds", 0.0)
        row = {"step": trainer.global_step, "time/step_seconds": total, "time/generation_seconds": generation,
               "time/sync_seconds": sync, "time/train_seconds": max(total - generation - sync, 0.0),
               "generated_tokens_per_second": stats.get("rollout/generated_tokens_per_second", 0.0),
               "trained_tokens": float(getattr(module, "last_trained_tokens", 0))}
        self.history.append(row)
        if trainer.logger:
            trainer.logger.log_metrics({k: v for k, v in row.items() if k.startswith("time/")}, step=trainer.global_step)
