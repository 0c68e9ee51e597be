"""Preemption-safe training: a run told to stop finishes its current optimizer step, saves
``<run dir>/checkpoints/last.ckpt`` and stops; ``ckpt_path=last`` (or ``auto``) then continues from the next
step, none lost and none repeated.

Two kinds of notice:
- SIGTERM, which SLURM and most schedulers send before they kill a job: the run exits with code 143.
  Lightning's own handler only notes the signal and stops after the step (``SIGTERMException``); without
  this callback the steps since the last periodic checkpoint were lost.
- the requeue signal (``signals``, default SIGUSR2: what submitit, and so ``sweeps/slurm.yaml``, has SLURM
  send ``signal_delay_s`` before the time limit, and on preemption). Whoever handled it before the run
  started (submitit: requeue the job, then exit) is called once the checkpoint is saved, not mid-step; the
  requeued job starts in the same run directory and ``ckpt_path: auto`` resumes it. With no such handler
  the run stops as on SIGTERM.

Through Lightning's public surface only: SIGTERM is Lightning's own (``Trainer.received_sigterm``, then its
``SIGTERMException`` after the step); a requeue signal sets ``Trainer.should_stop`` (the fit ends after this
step, its callbacks and loggers done) and :func:`raise_if_preempted`, called right after ``Trainer.fit``, turns it
into :class:`Preempted`, which carries the earlier handler to the entry point. No module state.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import lightning as L

from r3exp.errors import ConfigError

log = logging.getLogger(__name__)
EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a job the signal ended


class Preempted(Exception):
    """A requeue signal stopped the run after an optimizer step whose checkpoint was saved. The entry point
    calls :meth:`hand_over` once the run is closed (engine stopped, W&B finished), then exits with
    :data:`EXIT_CODE`."""

    def __init__(self, signum: signal.Signals, earlier: Callable | None):
        super().__init__(f"{signum.name}: stopped after an optimizer step, its checkpoint saved")
        self.signum, self.earlier = signum, earlier

    def hand_over(self) -> None:
        """Call the handler that held the signal before the run started (submitit: requeue the job, then exit).
        Nothing when there was none, or when it returns (submitit on ranks other than 0)."""
        if self.earlier is None:
            return
        log.warning("%s: handing over to %s", self.signum.name, getattr(self.earlier, "__qualname__", self.earlier))
        self.earlier(self.signum, None)


def raise_if_preempted(callbacks: Iterable[L.Callback]) -> None:
    """After ``Trainer.fit``: raise the :class:`Preempted` of a :class:`CheckpointOnSignal` that stopped it."""
    for callback in callbacks:
        if isinstance(callback, CheckpointOnSignal) and callback.preempted is not None:
            raise callback.preempted


def signal_numbers(names: Sequence[str]) -> list[signal.Signals]:
    """The signals named (``SIGUSR2``, ...); an unknown name is a config error naming the key."""
    unknown = [name for name in names if not isinstance(getattr(signal, str(name), None), signal.Signals)]
    if unknown:
        raise ConfigError(f"callbacks.preemption.signals: unknown signal {unknown[0]!r} (e.g. SIGUSR2, SIGUSR1)")
    return [getattr(signal, name) for name in names]


class CheckpointOnSignal(L.Callback):
    """At the end of every optimizer step: if any rank received SIGTERM or one of ``signals``, save the last
    checkpoint (every rank takes part, as in any checkpoint), then stop the run (SIGTERM: Lightning stops it,
    broadcasting rank 0's signal to the other ranks itself) or hand the signal to its earlier handler.

    Args:
        signals: names of the signals that ask for a checkpoint and a requeue (``SIGUSR2``: submitit's).
    """

    def __init__(self, signals: Sequence[str] = ("SIGUSR2",)):
        self.signals = signal_numbers(signals)
        self.received: signal.Signals | None = None
        self.preempted: Preempted | None = None  # set when a requeue signal stopped the fit
        self._earlier: dict[signal.Signals, object] = {}

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        for signum in self.signals:
            self._earlier[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        self._restore()

    def _note(self, signum: int, frame) -> None:  # a signal handler: note it, act at the step's end
        self.received = signal.Signals(signum)

    def _restore(self) -> None:
        for signum, handler in self._earlier.items():
            signal.signal(signum, handler)
        self._earlier = {}

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx) -> None:
        sigterm = trainer.received_sigterm
        requeue = self.received is not None
        if trainer.world_size > 1:  # one rank may have been signalled: all save, or none
            sigterm = trainer.strategy.reduce_boolean_decision(sigterm, all=False)
            requeue = trainer.strategy.reduce_boolean_decision(requeue, all=False)
        if not (sigterm or requeue):
            return
        name = "SIGTERM" if sigterm else (self.received or self.signals[0]).name
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:
            log.warning("%s after step %d: no checkpoint callback configured, nothing saved", name, trainer.global_step)
        else:
            path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
            trainer.save_checkpoint(path)
            log.warning(
                "%s: stopped after step %d, checkpoint saved to %s; continue with ckpt_path=last (or auto)",
                name,
                trainer.global_step,
                path,
            )
        if sigterm:
            return  # Lightning raises SIGTERMException after this step's callbacks and logging
        earlier = self._earlier.get(self.received) if self.received is not None else None
        self._restore()
        self.preempted = Preempted(self.received or self.signals[0], earlier if callable(earlier) else None)
        trainer.should_stop = True  # the fit ends once this step's other callbacks and loggers have run
