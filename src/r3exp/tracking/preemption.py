"""Preemption-safe training: a run told to stop (SIGTERM, which SLURM and most schedulers send before they
kill a job) finishes its current optimizer step, saves ``<run dir>/checkpoints/last.ckpt`` and exits with
code 143; ``ckpt_path=last`` then continues from the next step, none lost and none repeated.

Lightning's own handler only notes the signal and stops after the step (``SIGTERMException``); without
this callback the steps since the last periodic checkpoint were lost.
"""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)
EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a job the signal ended


class CheckpointOnSignal(L.Callback):
    """At the end of every optimizer step: if any rank received SIGTERM, save the last checkpoint (every
    rank takes part, as in any checkpoint), then let Lightning stop the run (it broadcasts rank 0's signal
    to the other ranks itself)."""

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx) -> None:
        stopping = bool(getattr(trainer, "received_sigterm", False))
        if trainer.world_size > 1:  # one rank may have been signalled: all save, or none
            stopping = trainer.strategy.reduce_boolean_decision(stopping, all=False)
        if not stopping:
            return
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:
            log.warning("SIGTERM after step %d: no checkpoint callback configured, nothing saved", trainer.global_step)
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        log.warning("SIGTERM: stopped after step %d, checkpoint saved to %s; continue with ckpt_path=last",
                    trainer.global_step, path)
