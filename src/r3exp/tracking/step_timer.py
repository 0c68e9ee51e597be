"""Per-step wall-clock split: generation (rollout), weight sync and training (forward, backward, step), and
each step's peak memory."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from r3exp import keys

GIB = 1024**3


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: torch's peak allocated memory on CUDA, the process's resident set (VmHWM) elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM back to the current RSS
        except OSError:
            pass


def peak_memory_gib(device: torch.device) -> float:
    """The peak since :func:`reset_peak_memory` (GiB); NaN where the platform does not say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / GIB
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return float("nan")


class StepTimer(L.Callback):
    """Logs ``time/step_seconds`` and ``time/train_seconds`` (step minus generation minus sync, from the
    module's :class:`~r3exp.records.StepRecord`) and ``memory/peak_gib`` (the step's peak: torch's allocated
    GPU memory on CUDA, the process's resident set on CPU, which includes a colocated engine's), and keeps
    every step's figures in ``history`` for benchmarks."""

    def __init__(self):
        self.history: list[dict[str, float]] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        reset_peak_memory(module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        total = time.perf_counter() - self._start
        record = module.last_step  # r3exp.records.StepRecord
        generation, sync = record.generation_seconds, record.sync_seconds
        row = {
            "step": trainer.global_step,
            "time/step_seconds": total,
            "time/generation_seconds": generation,
            keys.SYNC_SECONDS: sync,
            "time/train_seconds": max(total - generation - sync, 0.0),
            "generated_tokens_per_second": record.rollout_stats.get(keys.GENERATED_TOKENS_PER_SECOND, 0.0),
            "trained_tokens": float(record.trained_tokens),
            "memory/peak_gib": peak_memory_gib(module.device),
        }
        self.history.append(row)
        if trainer.logger:
            trainer.logger.log_metrics(
                {k: v for k, v in row.items() if k.startswith(("time/", "memory/"))}, step=trainer.global_step
            )
